"""kvbench: YCSB-style load and run phases against a store, closed or open loop.

kvbench load --records 10000 --seeds 127.0.0.1:7101
kvbench run --workload a --records 10000 --ops 50000 --concurrency 64 --json out.json
kvbench run --read 0.9 --update 0.1 --distribution uniform --duration 30 --target-rate 800
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvstore.bench import report
from kvstore.bench.adapters import STORES, KvstoreStore
from kvstore.bench.generators import InsertCounter
from kvstore.bench.runner import LoadShape, PhaseResult, Store, make_value, run_phase
from kvstore.bench.workloads import (
    CORE_WORKLOADS,
    Op,
    OperationChooser,
    UnsupportedWorkload,
    Workload,
    check_supported,
    custom_workload,
)

DEFAULT_SEEDS = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
# Inserts of client process i start at records + i * INSERT_STRIDE: disjoint new keys.
INSERT_STRIDE = 1_000_000_000
MAX_PROCESSES = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="phase", required=True)
    for phase in ("load", "run"):
        p = sub.add_parser(phase, help=f"the {phase} phase")
        p.add_argument("--store", choices=STORES, default="kvstore")
        p.add_argument("--seeds", default=os.environ.get("KVSTORE_SEEDS", DEFAULT_SEEDS))
        p.add_argument("--records", type=int, default=10_000, help="keys loaded / drawn from")
        p.add_argument("--value-size", type=int, default=100, help="bytes")
        p.add_argument("--concurrency", type=int, default=16, help="asyncio tasks per process")
        p.add_argument("--processes", type=int, default=1, help="client processes, merged")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--r", type=int, help="read quorum per request (kvstore)")
        p.add_argument("--w", type=int, help="write quorum per request (kvstore)")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
        p.add_argument("--json", type=Path, help="write the results as JSON here")
        p.add_argument("--csv", type=Path, help="write one CSV row per operation type here")
        p.add_argument("--quiet", action="store_true", help="no live progress line")
    run = sub.choices["run"]
    run.add_argument("--workload", choices=sorted(CORE_WORKLOADS), help="a YCSB core workload")
    for op in Op:
        run.add_argument(f"--{op.value}", type=float, default=0.0, help=f"proportion of {op.value}")
    run.add_argument("--distribution", choices=("uniform", "zipfian", "latest"))
    run.add_argument("--ops", type=int, help="operations in all (default 10,000)")
    run.add_argument("--duration", type=float, help="seconds, instead of --ops")
    run.add_argument("--warmup", type=float, default=0.0, help="seconds not recorded")
    run.add_argument("--target-rate", type=float, help="ops/s in all: an open loop")
    return parser


def choose_workload(args: argparse.Namespace) -> Workload:
    if args.phase == "load":  # every record once, in order
        return custom_workload({"insert": 1.0}, "uniform")
    custom = {op.value: getattr(args, op.value) for op in Op if getattr(args, op.value)}
    if args.workload and custom:
        raise SystemExit("kvbench: give --workload or a custom mix (--read ...), not both")
    if args.workload:
        return CORE_WORKLOADS[args.workload]
    if not custom:
        raise SystemExit("kvbench: give --workload a..f or a mix such as --read 0.9 --update 0.1")
    return custom_workload(custom, args.distribution or "zipfian")


def open_store(args: argparse.Namespace) -> Store:
    return KvstoreStore(args.seeds, r=args.r, w=args.w, timeout=args.timeout)


def _share(total: int | None, parts: int, index: int) -> int | None:
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def run_process(args: argparse.Namespace, index: int) -> dict[str, object]:
    """One client process's share of the phase; returns its encoded results."""
    workload = choose_workload(args)
    if args.phase == "load":
        first = sum(_share(args.records, args.processes, i) or 0 for i in range(index))
        inserted = InsertCounter(first)
        ops = _share(args.records, args.processes, index)
    else:
        inserted = InsertCounter(args.records + index * INSERT_STRIDE)
        ops = _share(args.ops, args.processes, index) if args.duration is None else None
    shape = LoadShape(
        concurrency=args.concurrency,
        ops=ops,
        duration=args.duration if args.phase == "run" else None,
        warmup=args.warmup if args.phase == "run" else 0.0,
        target_rate=(
            args.target_rate / args.processes if args.phase == "run" and args.target_rate else None
        ),
    )
    chooser = OperationChooser(
        workload, args.records, random.Random(args.seed * 1000 + index),
        distribution=None, inserted=inserted,
    )  # fmt: skip
    show = index == 0 and not args.quiet and sys.stderr.isatty()

    def progress(result: PhaseResult) -> None:
        print(
            f"\r{result.elapsed:7.1f} s  {result.completed:>9} ops  {result.throughput:9.0f} ops/s"
            f"  errors {sum(result.errors.values())}",
            end="", file=sys.stderr, flush=True,
        )  # fmt: skip

    async def go() -> PhaseResult:
        store = open_store(args)
        try:
            check_supported(workload, store.supported)
            return await run_phase(
                store, chooser, shape, make_value(args.value_size), progress if show else None
            )
        finally:
            await store.close()

    result = asyncio.run(go())
    if show:
        print(file=sys.stderr)
    return result.encode()


def _child(payload: tuple[dict[str, Any], int]) -> dict[str, object]:
    values, index = payload
    return run_process(argparse.Namespace(**values), index)


def run(args: argparse.Namespace) -> PhaseResult:
    if args.phase == "run" and (args.ops is None) == (args.duration is None):
        args.ops = None if args.duration is not None else 10_000
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise SystemExit(f"kvbench: --processes must be in 1..{MAX_PROCESSES}")
    if not 0 <= args.value_size <= 64 * 1024 * 1024 or args.records < 1:
        raise SystemExit("kvbench: --records must be >= 1 and --value-size in 0..64 MiB")
    if args.processes == 1:
        return PhaseResult.decode(run_process(args, 0))
    payloads = [(vars(args), i) for i in range(args.processes)]
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        encoded = pool.map(_child, payloads)
    merged = PhaseResult.decode(encoded[0])
    for data in encoded[1:]:
        merged.merge(PhaseResult.decode(data))
    return merged


def describe(args: argparse.Namespace) -> dict[str, object]:
    workload = choose_workload(args)
    return {
        "store": args.store,
        "phase": args.phase,
        "workload": workload.name,
        "mix": {op.value: p for op, p in workload.mix.items()},
        "distribution": getattr(args, "distribution", None) or workload.distribution,
        "records": args.records,
        "value_size": args.value_size,
        "concurrency": args.concurrency,
        "processes": args.processes,
        "ops": getattr(args, "ops", None),
        "duration": getattr(args, "duration", None),
        "warmup": getattr(args, "warmup", 0.0),
        "target_rate": getattr(args, "target_rate", None),
        "r": args.r,
        "w": args.w,
        "seed": args.seed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = str(args.json) if args.json else None
    args.csv = str(args.csv) if args.csv else None
    try:
        config = describe(args)
        result = run(args)
    except UnsupportedWorkload as exc:
        print(f"kvbench: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"kvbench: {exc}", file=sys.stderr)
        return 2
    print(
        f"# kvbench {args.phase} {json.dumps({k: v for k, v in config.items() if v is not None})}"
    )
    print(report.ycsb_text(result))
    if args.json:
        Path(args.json).write_text(report.to_json(result, config))
    if args.csv:
        Path(args.csv).write_text(report.to_csv(result, config))
    return 1 if result.completed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

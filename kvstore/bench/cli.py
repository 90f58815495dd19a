"""kvbench: YCSB-style load and run phases against a store, closed or open loop.

kvbench load --records 10000 --seeds 127.0.0.1:7101
kvbench run --workload a --records 10000 --ops 50000 --concurrency 64 --json out.json
kvbench run --read 0.9 --update 0.1 --distribution uniform --duration 30 --target-rate 800
kvbench run --workload c --duration 10 --rate-sweep 250,500,1000,2000 --json sweep.json
kvbench run --store redis --seeds 127.0.0.1:6379 --workload a --w 2
kvbench run --store etcd --seeds 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 --workload a
kvbench plot out.json sweep.json --out charts/
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import multiprocessing
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvstore import __version__
from kvstore.bench import report
from kvstore.bench.adapters import STORES, KvstoreStore, StoreUnavailable
from kvstore.bench.cpu import CpuProbe, parse_server_pids
from kvstore.bench.generators import InsertCounter
from kvstore.bench.intervals import IntervalLogs, status_line
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
from kvstore.extras import missing_extra

# Inserts of client process i start at records + i * INSERT_STRIDE: disjoint new keys.
INSERT_STRIDE = 1_000_000_000
MAX_PROCESSES = 64
MAX_SWEEP_STEPS = 50
# Time the client processes get to start before they begin together (a process that starts
# later begins at once; importing grpc takes under a second here).
PROCESS_START_MARGIN_S = 2.0
# Reporting intervals (status lines, .hlog intervals): the default and the allowed range.
DEFAULT_STATUS_INTERVAL_S = 10.0
STATUS_INTERVALS_S = (0.1, 3600.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="phase", required=True)
    for phase in ("load", "run"):
        p = sub.add_parser(phase, help=f"the {phase} phase")
        p.add_argument("--store", choices=sorted(STORES), default="kvstore")
        p.add_argument(
            "--seeds",
            help="addresses: kvstore nodes (default $KVSTORE_SEEDS, else the make-run cluster);"
            " for redis, the primary (default 127.0.0.1:6379); for etcd, the members' client"
            " addresses (default 127.0.0.1:2379)",
        )
        p.add_argument("--records", type=int, default=10_000, help="keys loaded / drawn from")
        p.add_argument("--value-size", type=int, default=100, help="bytes")
        p.add_argument("--concurrency", type=int, default=16, help="asyncio tasks per process")
        p.add_argument("--processes", type=int, default=1, help="client processes, merged")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--r", type=int, help="read quorum per request (kvstore; redis: 1)")
        p.add_argument(
            "--w", type=int, help="write quorum per request (kvstore); copies for redis (WAIT w-1)"
        )
        p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
        p.add_argument(
            "--no-hedge",
            dest="hedge",
            action="store_false",
            help="kvstore: no hedged second tries of slow calls (the nodes then serve exactly"
            " the requests counted here, as retries only follow failures)",
        )
        p.add_argument(
            "--batch",
            type=int,
            default=1,
            help="operations per request where the store has batches (kvstore: get_many then"
            " put_many; redis: one pipeline);"
            " each operation's latency is its batch's",
        )
        p.add_argument(
            "--server-pid",
            action="append",
            default=[],
            metavar="NAME=PID",
            help="also report this server process's CPU per operation (repeatable)",
        )
        p.add_argument("--json", type=Path, help="write the results as JSON here")
        p.add_argument("--csv", type=Path, help="write one CSV row per operation type here")
        p.add_argument("--quiet", action="store_true", help="no live progress line")
        p.add_argument(
            "--status-interval",
            type=float,
            help="seconds between status lines on stderr (default 10 when stderr is not a"
            " terminal, none on one: the live line shows progress there; 0: none);"
            " also the length of --hlog-dir's intervals",
        )
        p.add_argument(
            "--hlog-dir",
            type=Path,
            help="write each operation's latencies here as an HdrHistogram interval log"
            " (OP.hlog, one histogram per interval)",
        )
    run = sub.choices["run"]
    run.add_argument("--workload", choices=sorted(CORE_WORKLOADS), help="a YCSB core workload")
    for op in Op:
        run.add_argument(f"--{op.value}", type=float, default=0.0, help=f"proportion of {op.value}")
    run.add_argument("--distribution", choices=("uniform", "zipfian", "latest"))
    run.add_argument("--ops", type=int, help="operations in all (default 10,000)")
    run.add_argument("--duration", type=float, help="seconds, instead of --ops")
    run.add_argument("--warmup", type=float, default=0.0, help="seconds not recorded")
    run.add_argument("--target-rate", type=float, help="ops/s in all: an open loop")
    run.add_argument(
        "--rate-sweep",
        metavar="R1,R2,...",
        help="run once per target rate (open loop), for a latency-at-load curve",
    )
    plot = sub.add_parser("plot", help="PNG charts from --json results")
    plot.add_argument("results", type=Path, nargs="+", help="kvbench --json files")
    plot.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG files")
    return parser


def choose_workload(args: argparse.Namespace) -> Workload:
    if args.phase == "load":  # every record once, in order
        return custom_workload({"insert": 1.0}, "uniform")
    custom = {op.value: getattr(args, op.value) for op in Op if getattr(args, op.value)}
    if args.workload and custom:
        raise ValueError("give --workload or a custom mix (--read ...), not both")
    if args.workload:
        return CORE_WORKLOADS[args.workload]
    if not custom:
        raise ValueError("give --workload a..f or a mix such as --read 0.9 --update 0.1")
    return custom_workload(custom, args.distribution or "zipfian")


def open_store(args: argparse.Namespace) -> Store:
    if args.store == "kvstore":
        return KvstoreStore(args.seeds, r=args.r, w=args.w, timeout=args.timeout, hedge=args.hedge)
    store: Store = STORES[args.store](args.seeds, r=args.r, w=args.w, timeout=args.timeout)
    return store


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
        batch=args.batch,
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
        distribution=args.distribution if args.phase == "run" else None, inserted=inserted,
    )  # fmt: skip
    # Server CPU is measured once, by the first client process; every process counts its own.
    cpu = CpuProbe(parse_server_pids(args.server_pid) if index == 0 else None)
    show = index == 0 and not args.quiet and sys.stderr.isatty()

    def progress(result: PhaseResult) -> None:
        print(
            f"\r{result.elapsed:7.1f} s  {result.completed:>9} ops  {result.throughput:9.0f} ops/s"
            f"  p99 {result.latencies.overall_percentile(99.0):8.2f} ms"
            f"  errors {sum(result.errors.values())}",
            end="", file=sys.stderr, flush=True,
        )  # fmt: skip

    # Status lines and interval logs come from the first process: its own operations.
    hlog = IntervalLogs(Path(args.hlog_dir)) if index == 0 and args.hlog_dir else None
    status = index == 0 and args.status_interval > 0
    label = f"[client 1 of {args.processes}] " if args.processes > 1 else ""
    previous = 0.0

    def on_interval(result: PhaseResult, elapsed: float) -> None:
        nonlocal previous
        taken = result.latencies.take_interval()
        if hlog is not None:
            hlog.write(taken, elapsed)
        if status:
            line = status_line(result, elapsed, taken, elapsed - previous)
            print(label + line, file=sys.stderr, flush=True)
        previous = elapsed

    reporting = hlog is not None or status

    async def go() -> PhaseResult:
        store = open_store(args)
        try:
            check_supported(workload, store.supported)
            return await run_phase(
                store, chooser, shape, make_value(args.value_size),
                progress if show else None, cpu=cpu,
                on_interval=on_interval if reporting else None,
                interval_s=args.status_interval or DEFAULT_STATUS_INTERVAL_S,
            )  # fmt: skip
        finally:
            await store.close()
            if hlog is not None:
                hlog.close()

    # Side-by-side processes start together, so their seconds line up when merged and the
    # server CPU sampled by the first covers the others' operations too.
    start_at = getattr(args, "start_at", None)
    if start_at is not None:
        time.sleep(min(max(start_at - time.time(), 0.0), PROCESS_START_MARGIN_S))
    result = asyncio.run(go())
    if show:
        print(file=sys.stderr)
    return result.encode()


def _child(payload: tuple[dict[str, Any], int]) -> dict[str, object]:
    values, index = payload
    return run_process(argparse.Namespace(**values), index)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options before anything starts, with what is wrong."""
    args.seeds = args.seeds or (
        os.environ.get("KVSTORE_SEEDS") if args.store == "kvstore" else None
    )
    args.seeds = args.seeds or STORES[args.store].default_seeds
    if args.phase == "run" and (args.ops is None) == (args.duration is None):
        if args.ops is not None:
            raise ValueError("give --ops or --duration, not both")
        args.ops = 10_000
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise ValueError(f"--processes must be in 1..{MAX_PROCESSES}")
    if not 0 <= args.value_size <= 64 * 1024 * 1024 or args.records < 1:
        raise ValueError("--records must be >= 1 and --value-size in 0..64 MiB")
    parse_server_pids(args.server_pid)
    if args.status_interval is None:
        args.status_interval = 0.0 if sys.stderr.isatty() else DEFAULT_STATUS_INTERVAL_S
    low, high = STATUS_INTERVALS_S
    if args.status_interval != 0 and not low <= args.status_interval <= high:
        raise ValueError(f"--status-interval must be 0 (none) or in {low}..{high} seconds")
    if args.hlog_dir and args.processes != 1:
        raise ValueError("--hlog-dir needs --processes 1 (one log per operation, one writer)")
    choose_workload(args)
    if args.batch > 1 and not callable(getattr(STORES[args.store], "batch", None)):
        raise StoreUnavailable(f"{args.store} has no batched operations: --batch must be 1")


def sweep_rates(spec: str) -> list[float]:
    try:
        rates = [float(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--rate-sweep wants rates such as 250,500,1000, got {spec!r}") from None
    if not 1 <= len(rates) <= MAX_SWEEP_STEPS or any(not r > 0 for r in rates):
        raise ValueError(f"--rate-sweep takes 1..{MAX_SWEEP_STEPS} positive rates")
    return rates


def run(args: argparse.Namespace) -> PhaseResult:
    """One phase, in one process or several whose results merge."""
    if args.processes == 1:
        return PhaseResult.decode(run_process(args, 0))
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        start_at = time.time() + PROCESS_START_MARGIN_S
        payloads = [({**vars(args), "start_at": start_at}, i) for i in range(args.processes)]
        encoded = pool.map(_child, payloads)
    merged = PhaseResult.decode(encoded[0])
    for data in encoded[1:]:
        merged.merge(PhaseResult.decode(data))
    return merged


def describe(args: argparse.Namespace) -> dict[str, object]:
    workload = choose_workload(args)
    return {
        "store": args.store,
        "seeds": args.seeds,
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
        "batch": args.batch,
        "server_pids": parse_server_pids(args.server_pid),
    }


def measure(args: argparse.Namespace) -> list[report.Run]:
    """The phase once, or once per rate of --rate-sweep."""
    spec = getattr(args, "rate_sweep", None)
    if not spec:
        return [(describe(args), run(args))]
    if args.target_rate:
        raise ValueError("give --target-rate or --rate-sweep, not both")
    runs: list[report.Run] = []
    for rate in sweep_rates(spec):
        step = copy.copy(args)
        step.target_rate = rate
        runs.append((describe(step), run(step)))
        print(f"# rate {rate:g}/s: achieved {runs[-1][1].throughput:.0f}/s", file=sys.stderr)
    return runs


def plot_command(args: argparse.Namespace) -> int:
    from kvstore.bench import plot  # matplotlib is an optional extra

    documents = [json.loads(path.read_text()) for path in args.results]
    labels = [path.stem for path in args.results]
    for written in plot.draw(documents, labels, args.out):
        print(written)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.phase != "plot" and (problem := missing_extra("bench")):
        print(f"kvbench {args.phase}: {problem}", file=sys.stderr)
        return 2
    try:
        if args.phase == "plot":
            return plot_command(args)
        args.json = str(args.json) if args.json else None
        args.csv = str(args.csv) if args.csv else None
        args.hlog_dir = str(args.hlog_dir) if args.hlog_dir else None
        check_args(args)
        runs = measure(args)
    except (UnsupportedWorkload, StoreUnavailable, ValueError, ImportError, OSError) as exc:
        print(f"kvbench: {exc}", file=sys.stderr)
        return 2
    for config, result in runs:
        shown = {k: v for k, v in config.items() if v is not None and v != {}}
        print(f"# kvbench {args.phase} {json.dumps(shown)}")
        print(report.ycsb_text(result))
    if len(runs) > 1:
        documents = [report.as_dict(result, config) for config, result in runs]
        print("# latency at load\n" + report.sweep_table(documents))
    if args.json:
        Path(args.json).write_text(report.to_json(runs))
    if args.csv:
        Path(args.csv).write_text(report.to_csv(runs))
    return 1 if any(result.completed == 0 for _, result in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

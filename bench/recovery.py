"""Failure handling on real node processes on 127.0.0.1: three figures.

    .venv/bin/python bench/recovery.py [--keys 10000] [--partitions 256] [--ae-interval-ms 200]
        [--load-seconds 20] [--skip hints,ae,cost] [--json-out recovery.json]

1. hints: hint drain. A 5-node cluster with anti-entropy off, so hints alone do the work. One
   node is killed (kill -9), --keys new keys (--value-size bytes) are written through the other
   four, the hints they hold are counted (Status.hints_pending summed over live nodes), the
   node is started again and the time from its start until no hint is pending is measured
   (polled every --poll-s). Then a sample of --sample keys is checked on each of its 3
   primaries (LocalGet, the node's own storage).
2. ae: anti-entropy convergence. A fresh 5-node cluster with anti-entropy every
   --ae-interval-ms; --keys keys are written with every node up, node 0 is stopped, its data
   folder deleted and it is started empty. Time until a full pass of LocalGet over every key
   node 0 is a primary of finds them all (no client reads, so no read repair), with node 0's
   counters (ae_exchanges, ae_keys_repaired).
3. cost: anti-entropy's cost on foreground throughput. A fresh 3-node cluster per run, loaded
   with --keys records by `kvbench load`, then `kvbench run --workload a` (50% reads, 50%
   updates, closed loop, --concurrency tasks) for --load-seconds; AE on (--ae-interval-ms) and
   off (0) alternately, --cost-rounds times each; medians of ops/s and their ratio.

Node data lives in a temporary folder; every started node is stopped at the end. Prints a
markdown table and then one JSON line with every figure (also written to --json-out). Run it on
a quiet machine: the figures are timings.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kvstore import AsyncClient, Client
from kvstore.core.ring import Ring
from kvstore.errors import KvError
from kvstore.node.local_cluster import LocalCluster, free_ports

PHASES = ("hints", "ae", "cost")
WRITE_ATTEMPTS = 3


def value_for(key: str, size: int) -> bytes:
    """A value of `size` bytes that differs per key, so a check can tell keys apart."""
    digest = hashlib.sha256(key.encode()).digest()
    return (digest * (size // len(digest) + 1))[:size]


def node_args(args: argparse.Namespace, ae_interval_ms: int) -> tuple[str, ...]:
    return (
        "--partitions", str(args.partitions),
        "--gossip-interval-ms", str(args.gossip_interval_ms),
        "--anti-entropy-interval-ms", str(ae_interval_ms),
    )  # fmt: skip


def start_cluster(
    count: int, root: Path, name: str, extra_args: tuple[str, ...], started: list[LocalCluster]
) -> LocalCluster:
    """A cluster in root/name, recorded in `started` before it starts (so it is stopped even
    if starting fails half way)."""
    cluster = LocalCluster(count, root / name, ports=free_ports(count), extra_args=extra_args)
    started.append(cluster)
    cluster.start()
    return cluster


def ring_of(cluster: LocalCluster, args: argparse.Namespace) -> Ring:
    return Ring(cluster.addresses, args.partitions, 3)


# ---- client work ----


async def write_keys(
    seeds: Sequence[str], keys: Sequence[str], size: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """Put every key (retried up to WRITE_ATTEMPTS times); returns time, errors, failures."""
    errors: Counter[str] = Counter()
    failed: list[str] = []
    queue = iter(keys)

    async def worker(kv: AsyncClient) -> None:
        for key in queue:
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    await kv.put(key, value_for(key, size))
                    break
                except KvError as exc:
                    errors[type(exc).__name__] += 1
                    if attempt == WRITE_ATTEMPTS - 1:
                        failed.append(key)

    began = time.perf_counter()
    async with AsyncClient(list(seeds), timeout=timeout) as kv:
        await asyncio.gather(*(worker(kv) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "write_s": round(elapsed, 3),
        "writes_per_s": round(len(keys) / elapsed, 1),
        "write_errors": dict(errors),
        "keys_not_written": len(failed),
    }


async def stored_on(
    checks: Sequence[tuple[str, str]], size: int, concurrency: int, timeout: float
) -> list[tuple[str, str]]:
    """The (node, key) pairs of `checks` whose node does not hold the key's value itself."""
    missing: list[tuple[str, str]] = []
    queue = iter(checks)

    async def worker(kv: AsyncClient) -> None:
        for node, key in queue:
            try:
                result = await kv.local_get(node, key)
                if value_for(key, size) not in result.values:
                    missing.append((node, key))
            except KvError:
                missing.append((node, key))

    seeds = sorted({node for node, _ in checks}) or ["127.0.0.1:1"]
    async with AsyncClient(seeds, timeout=timeout) as kv:
        await asyncio.gather(*(worker(kv) for _ in range(concurrency)))
    return missing


def hints_pending(kv: Client, addresses: Sequence[str]) -> int | None:
    """Hints held by the nodes at `addresses`, or None if one of them did not answer."""
    try:
        return sum(kv.status(address).hints_pending for address in addresses)
    except KvError:
        return None


def wait_for(predicate: Callable[[], bool], max_wait: float, poll: float) -> tuple[bool, float]:
    began = time.perf_counter()
    while True:
        if predicate():
            return True, time.perf_counter() - began
        if time.perf_counter() - began > max_wait:
            return False, time.perf_counter() - began
        time.sleep(poll)


# ---- 1. hint drain ----


def measure_hints(
    args: argparse.Namespace, root: Path, started: list[LocalCluster]
) -> dict[str, Any]:
    cluster = start_cluster(5, root, "hints", node_args(args, 0), started)
    victim = 0
    address = cluster.addresses[victim]
    live = [a for a in cluster.addresses if a != address]
    ring = ring_of(cluster, args)
    keys = [f"hint-{i:08d}" for i in range(args.keys)]
    expected = sum(address in ring.primaries(k.encode()) for k in keys)

    cluster.kill_node(victim)
    print(f"# hints: killed {address}; writing {len(keys)} keys", file=sys.stderr)
    out: dict[str, Any] = {"victim": address, "keys": len(keys), "keys_on_victim": expected}
    out |= asyncio.run(write_keys(live, keys, args.value_size, args.concurrency, args.timeout))

    with Client(cluster.addresses, timeout=args.timeout) as kv:
        # Replication past the write quorum goes on in the background: wait until the count
        # stops moving (bounded) before reading it.
        counts: list[int | None] = []

        def settled() -> bool:
            counts.append(hints_pending(kv, live))
            return len(counts) >= 4 and counts[-1] is not None and len(set(counts[-4:])) == 1

        wait_for(settled, 10.0, args.poll_s)
        out["hints_pending_before"] = counts[-1]
        out["hints_counters"] = {
            name: sum(kv.status(a).counters.get(name, 0) for a in live)
            for name in ("hints_stored", "hints_delivered", "hints_dropped")
        }
        print(f"# hints: {counts[-1]} pending; restarting {address}", file=sys.stderr)

        began = time.perf_counter()
        cluster.start_node(victim)
        out["ready_s"] = round(time.perf_counter() - began, 3)
        trace: list[tuple[float, int | None]] = []

        def drained() -> bool:
            pending = hints_pending(kv, cluster.addresses)
            trace.append((round(time.perf_counter() - began, 2), pending))
            return pending == 0

        ok, _ = wait_for(drained, args.max_wait, args.poll_s)
        out["drained"] = ok
        out["drain_s"] = trace[-1][0]
        out["hints_pending_after"] = trace[-1][1]
        out["drain_rate_per_s"] = (
            round((out["hints_pending_before"] or 0) / out["drain_s"], 1) if ok else None
        )
        out["hints_counters_after"] = {
            name: sum(kv.status(a).counters.get(name, 0) for a in cluster.addresses)
            for name in ("hints_stored", "hints_delivered", "hints_dropped")
        }

    sample = random.Random(args.seed).sample(keys, min(args.sample, len(keys)))
    checks = [(node, k) for k in sample for node in ring.primaries(k.encode())]
    missing = asyncio.run(stored_on(checks, args.value_size, args.concurrency, args.timeout))
    out["sample_keys"] = len(sample)
    out["sample_copies_missing"] = len(missing)
    out["sample_copies_missing_on_victim"] = sum(node == address for node, _ in missing)
    cluster.stop()
    return out


# ---- 2. anti-entropy convergence ----


def measure_ae(args: argparse.Namespace, root: Path, started: list[LocalCluster]) -> dict[str, Any]:
    cluster = start_cluster(5, root, "ae", node_args(args, args.ae_interval_ms), started)
    victim = 0
    address = cluster.addresses[victim]
    ring = ring_of(cluster, args)
    keys = [f"ae-{i:08d}" for i in range(args.keys)]
    mine = [k for k in keys if address in ring.primaries(k.encode())]
    print(f"# ae: writing {len(keys)} keys with every node up", file=sys.stderr)
    out: dict[str, Any] = {"victim": address, "keys": len(keys), "keys_on_victim": len(mine)}
    out |= asyncio.run(
        write_keys(cluster.addresses, keys, args.value_size, args.concurrency, args.timeout)
    )

    cluster.stop_node(victim)
    shutil.rmtree(cluster.nodes[victim].data_dir)
    print(f"# ae: {address} stopped and emptied; starting it", file=sys.stderr)
    began = time.perf_counter()
    cluster.start_node(victim)
    out["ready_s"] = round(time.perf_counter() - began, 3)
    checks = [(address, k) for k in mine]
    passes: list[dict[str, float | int]] = []
    converged = False
    while time.perf_counter() - began <= args.max_wait:
        start = time.perf_counter() - began
        missing = asyncio.run(stored_on(checks, args.value_size, args.concurrency, args.timeout))
        end = time.perf_counter() - began
        passes.append({"start_s": round(start, 2), "end_s": round(end, 2), "missing": len(missing)})
        if not missing:
            converged = True
            break
        time.sleep(args.poll_s)
    out["converged"] = converged
    out["passes"] = len(passes)
    out["converged_s"] = passes[-1]["end_s"] if converged else None
    out["last_pass_started_s"] = passes[-1]["start_s"] if passes else None
    out["missing_first_pass"] = passes[0]["missing"] if passes else None
    out["missing_last_pass"] = passes[-1]["missing"] if passes else None
    with Client(cluster.addresses, timeout=args.timeout) as kv:
        out["victim_counters"] = dict(sorted(kv.status(address).counters.items()))
        out["others_ae_keys_repaired"] = sum(
            kv.status(a).counters.get("ae_keys_repaired", 0)
            for a in cluster.addresses
            if a != address
        )
    cluster.stop()
    return out


# ---- 3. cost of anti-entropy ----


def kvbench(argv: Sequence[str]) -> None:
    command = [sys.executable, "-m", "kvstore.bench.cli", *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )


def measure_cost(
    args: argparse.Namespace, root: Path, started: list[LocalCluster]
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for round_ in range(args.cost_rounds):
        for ae_ms in (args.ae_interval_ms, 0):
            name = f"cost-{round_}-{'on' if ae_ms else 'off'}"
            cluster = start_cluster(3, root, name, node_args(args, ae_ms), started)
            try:
                common = [
                    "--seeds", ",".join(cluster.addresses), "--records", str(args.keys),
                    "--value-size", str(args.value_size), "--concurrency", str(args.concurrency),
                    "--timeout", str(args.timeout), "--quiet",
                ]  # fmt: skip
                kvbench(["load", *common])
                result_path = root / f"{name}.json"
                print(f"# cost: {name}: {args.load_seconds} s of workload a", file=sys.stderr)
                kvbench(
                    ["run", *common, "--workload", "a", "--duration", str(args.load_seconds),
                     "--json", str(result_path)]
                )  # fmt: skip
                doc = json.loads(result_path.read_text())
                with Client(cluster.addresses, timeout=args.timeout) as kv:
                    exchanges = sum(
                        kv.status(a).counters.get("ae_exchanges", 0) for a in cluster.addresses
                    )
            finally:
                cluster.stop()
            runs.append(
                {
                    "ae_interval_ms": ae_ms,
                    "ops_per_s": round(doc["throughput"], 1),
                    "completed": doc["completed"],
                    "errors": sum(doc["errors"].values()),
                    "ae_exchanges": exchanges,
                }
            )
    on = [r["ops_per_s"] for r in runs if r["ae_interval_ms"]]
    off = [r["ops_per_s"] for r in runs if not r["ae_interval_ms"]]
    return {
        "runs": runs,
        "ops_per_s_ae_on": round(statistics.median(on), 1),
        "ops_per_s_ae_off": round(statistics.median(off), 1),
        "ratio_on_off": round(statistics.median(on) / statistics.median(off), 3),
    }


# ---- report ----


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    if hints := results.get("hints"):
        rows += [
            ("hint drain: hints pending after writes", f"{hints['hints_pending_before']}"),
            ("hint drain: node start to ready", f"{hints['ready_s']:.2f} s"),
            (
                "hint drain: node start to 0 pending",
                f"{hints['drain_s']:.2f} s" + ("" if hints["drained"] else " (not drained)"),
            ),
            ("hint drain: rate", f"{hints['drain_rate_per_s']} hints/s"),
            (
                "hint drain: sample copies missing",
                f"{hints['sample_copies_missing']} of {3 * hints['sample_keys']}",
            ),
            ("hint drain: write errors (node down)", json.dumps(hints["write_errors"])),
        ]
    if ae := results.get("ae"):
        converged = f"{ae['converged_s']} s" if ae["converged"] else "not converged"
        counters = ae["victim_counters"]
        rows += [
            ("anti-entropy: keys to rebuild on node 0", f"{ae['keys_on_victim']}"),
            ("anti-entropy: node start to full pass finding all", converged),
            ("anti-entropy: passes", f"{ae['passes']}"),
            (
                "anti-entropy: node 0 ae_exchanges / ae_keys_repaired",
                f"{counters.get('ae_exchanges', 0)} / {counters.get('ae_keys_repaired', 0)}",
            ),
        ]
    if cost := results.get("cost"):
        rows += [
            ("AE cost: workload a ops/s, AE on (median)", f"{cost['ops_per_s_ae_on']:.0f}"),
            ("AE cost: workload a ops/s, AE off (median)", f"{cost['ops_per_s_ae_off']:.0f}"),
            ("AE cost: ratio on / off", f"{cost['ratio_on_off']:.3f}"),
        ]
    width = max((len(name) for name, _ in rows), default=6)
    lines = [f"| {'figure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000, help="keys written (and records)")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value")
    parser.add_argument("--partitions", type=int, default=256, help="node --partitions")
    parser.add_argument(
        "--ae-interval-ms", type=int, default=200, help="anti-entropy interval where it is on"
    )
    parser.add_argument("--gossip-interval-ms", type=int, default=1000, help="node gossip")
    parser.add_argument("--load-seconds", type=float, default=20.0, help="per cost run")
    parser.add_argument("--cost-rounds", type=int, default=2, help="AE on/off pairs of runs")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--sample", type=int, default=500, help="keys checked after the drain")
    parser.add_argument("--max-wait", type=float, default=600.0, help="seconds, per wait")
    parser.add_argument("--poll-s", type=float, default=0.25, help="seconds between polls")
    parser.add_argument("--seed", type=int, default=1, help="of the sample")
    parser.add_argument("--skip", default="", help="comma list of hints,ae,cost")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if unknown := args.skip - set(PHASES):
        parser.error(f"--skip takes {','.join(PHASES)}, got {','.join(sorted(unknown))}")
    if args.keys < 1 or args.value_size < 1 or args.concurrency < 1 or args.cost_rounds < 1:
        parser.error("--keys, --value-size, --concurrency and --cost-rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    measures = {"hints": measure_hints, "ae": measure_ae, "cost": measure_cost}
    results: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("skip", "json_out")}
    }
    started: list[LocalCluster] = []
    with tempfile.TemporaryDirectory(prefix="kvstore-recovery-") as tmp:
        try:
            for phase in PHASES:
                if phase not in args.skip:
                    results[phase] = measures[phase](args, Path(tmp), started)
        finally:
            for cluster in started:
                cluster.stop()
    print(table(results))
    line = json.dumps(results, sort_keys=True)
    print(line)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

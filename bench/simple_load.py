"""Simple put/get throughput and latency on a local 3-node cluster (N=3 R=2 W=2).

    .venv/bin/python bench/simple_load.py [--ops 5000] [--concurrency 1,16,64] [--value-size 100]

Starts its own cluster on free ports in a temporary folder, runs a closed loop of puts (each
key written once, so no siblings) and then gets of the same keys at each concurrency, prints
ops/s, p50/p99 latency and the nodes' CPU per operation, and stops every process it started.
The full benchmark CLI (YCSB workloads, open loop, Redis side by side) is kvbench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from kvstore import AsyncClient
from kvstore.bench.cpu import process_cpu_seconds
from kvstore.node.local_cluster import LocalCluster, free_ports


def cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


async def run_phase(
    kv: AsyncClient, op: str, keys: list[str], value: bytes, concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue = iter(keys)

    async def worker() -> None:
        nonlocal errors
        for key in queue:
            start = time.perf_counter()
            try:
                if op == "put":
                    await kv.put(key, value)
                else:
                    result = await kv.get(key)
                    assert result.values == [value], f"{key}: {result.values!r}"
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began, sorted(latencies), errors


async def main_async(args: argparse.Namespace, cluster: LocalCluster) -> None:
    value = os.urandom(args.value_size)
    pids = [n.pid for n in cluster.nodes if n.pid]
    print(
        f"{'op':<4} {'conc':>5} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'node CPU us/op':>15} err"
    )
    async with AsyncClient(cluster.seeds, timeout=10.0) as kv:
        for concurrency in args.concurrency:
            keys = [f"bench-{concurrency}-{i}" for i in range(args.ops)]
            for op in ("put", "get"):
                cpu_before = cpu_seconds(pids)
                elapsed, latencies, errors = await run_phase(kv, op, keys, value, concurrency)
                cpu = cpu_seconds(pids) - cpu_before
                done = len(latencies)
                print(
                    f"{op:<4} {concurrency:>5} {done / elapsed:>8.0f}"
                    f" {percentile(latencies, 0.50) * 1e3:>8.2f}"
                    f" {percentile(latencies, 0.99) * 1e3:>8.2f}"
                    f" {cpu / max(done, 1) * 1e6:>15.0f} {errors}",
                    flush=True,
                )
                if latencies:
                    assert statistics.mean(latencies) > 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if not 1 <= args.ops <= 1_000_000:
        parser.error("--ops must be in 1..1,000,000")
    with (
        tempfile.TemporaryDirectory(prefix="kvbench-simple-") as data,
        LocalCluster(3, data, ports=free_ports(3)) as cluster,
    ):
        cluster.start()
        asyncio.run(main_async(args, cluster))


if __name__ == "__main__":
    main()

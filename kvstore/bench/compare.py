"""Side-by-side figures: kvstore (3 nodes, N=3 R=2 W=2), Redis (a primary, two replicas,
`WAIT 1` after each write) and etcd (3 members, Raft, fsync on every commit), all on 127.0.0.1,
the same workloads through the same kvbench, in one run. Writes a table of ratios (kvstore /
Redis, kvstore / etcd) with each process's CPU per operation, and the machine's floor: a
grpc.aio unary echo at concurrency 1, with kvstore's lone put and get as multiples of it.

    bench/compare [--workloads a,c] [--records 10000] [--duration 20] [--concurrency 64]
                  [--stores kvstore,redis,etcd] [--no-floor]

Everything it starts (three kvstore nodes, three redis-servers, three etcd members, the echo
server, the kvbench clients) is tracked by pid and stopped by that pid, also when it fails or
is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvstore.bench import floor, report
from kvstore.bench.etcd_local import EtcdCluster, EtcdUnavailable, ensure_etcd_server
from kvstore.bench.redis_local import RedisReplicaSet, RedisUnavailable, ensure_redis_server
from kvstore.bench.workloads import CORE_WORKLOADS
from kvstore.node.local_cluster import ClusterError, LocalCluster, free_ports

STORES = ("kvstore", "kvstore-sync", "kvstore-tls", "redis", "etcd")  # the table's row order
DEFAULT_STORES = ("kvstore", "redis", "etcd")
LABELS = {
    "kvstore": "kvstore",
    "kvstore-sync": "kvstore with sync_writes",
    "kvstore-tls": "kvstore with TLS and a token",
    "redis": "Redis",
    "etcd": "etcd",
}
KVBENCH = [sys.executable, "-m", "kvstore.bench.cli"]
Result = dict[str, Any]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workloads", default="a,c", help="YCSB core workloads, e.g. a,b,c,f")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before recording")
    parser.add_argument("--repeat", type=int, default=1, help="runs per store and workload")
    parser.add_argument(
        "--rate-sweep", metavar="R1,R2,...", help="also an open-loop latency-at-load sweep of"
        " the first workload at these rates (each --duration long)",
    )  # fmt: skip
    parser.add_argument(
        "--stores",
        default=",".join(DEFAULT_STORES),
        help="which of kvstore,kvstore-sync,kvstore-tls,redis,etcd to run (default: all but"
        " kvstore-sync, a second kvstore cluster with sync_writes = true, and kvstore-tls, a"
        " secure one)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the machine's floor (echo, lone ops)"
    )
    parser.add_argument(
        "--floor-duration", type=float, default=3.0, help="seconds per timed floor loop"
    )
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in CORE_WORKLOADS or w == "e"]
    if unknown or not args.workloads:
        parser.error(f"workloads are a, b, c, d, f (e needs scans), got {unknown or 'none'}")
    if not 1 <= args.repeat <= 10 or not 0 < args.duration <= 600 or args.records < 1:
        parser.error("--repeat in 1..10, --duration in (0, 600] s, --records >= 1")
    if not 0 < args.floor_duration <= 60:
        parser.error("--floor-duration in (0, 60] s")
    chosen = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not chosen or any(s not in STORES for s in chosen) or len(set(chosen)) != len(chosen):
        parser.error(f"--stores is some of {','.join(STORES)}, each once; got {args.stores!r}")
    args.stores = [s for s in STORES if s in chosen]  # the table's order, whatever was typed
    return args


# The settings a client takes its credentials from (kvstore.client.credentials).
_CREDENTIALS = ("KVSTORE_TLS_CA", "KVSTORE_TLS_CERT", "KVSTORE_TLS_KEY", "KVSTORE_TOKEN")


def kvbench(arguments: list[str], timeout: float, credentials: Mapping[str, str]) -> None:
    """Run kvbench with exactly `credentials` (none for a plaintext cluster) in its env."""
    env = {k: v for k, v in os.environ.items() if k not in _CREDENTIALS}
    env.update(credentials)
    done = subprocess.run([*KVBENCH, *arguments, "--quiet"], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"kvbench {' '.join(arguments[:3])} failed:\n{done.stderr[-3000:]}")


def store_arguments(store: str, seeds: str, pids: Mapping[str, int]) -> list[str]:
    # kvstore N=3 R=2 W=2; Redis SET + WAIT 1 (two copies); etcd's quorum is Raft's majority.
    quorum = {"kvstore": ["--r", "2", "--w", "2"], "redis": ["--w", "2"]}.get(store, [])
    watched = [f"--server-pid={name}={pid}" for name, pid in pids.items()]
    return ["--store", store, "--seeds", seeds, *quorum, *watched]


def headline(result: Result) -> dict[str, Any]:
    """The row a reader wants: ops/s, p50/p99 per operation, CPU µs per op per process."""
    operations = result["operations"]
    cpu = result.get("cpu_us_per_op", {})
    gone = sorted(name for name, us in cpu.items() if math.isnan(us))
    if gone:  # a server that died mid-run makes the comparison meaningless
        raise RuntimeError(f"{', '.join(gone)} exited during a measured run")
    return {
        "ops_s": result["throughput"],
        "errors": sum(result["errors"].values()),
        "not_found": sum(result.get("not_found", {}).values()),
        "latency_ms": {op: (s["p50_ms"], s["p99_ms"]) for op, s in sorted(operations.items())},
        "cpu_us_per_op": dict(cpu),
        "server_cpu_us_per_op": sum(v for k, v in cpu.items() if k != "client"),
    }


def median_run(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r["throughput"])[len(results) // 2]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def describe_stores(stores: Sequence[str]) -> str:
    described = {
        "kvstore": "kvstore: 3 nodes, N=3 R=2 W=2.",
        "kvstore-sync": "kvstore-sync: the same, with sync_writes = true (an fsync per group"
        " commit).",
        "kvstore-tls": "kvstore-tls: the same as kvstore, secure: mutual TLS between nodes, TLS"
        " and a write token from the client.",
        "redis": "Redis: a primary and two replicas, SET + WAIT 1 pipelined, reads from the"
        " primary, AOF without fsync (like kvstore's WAL).",
        "etcd": "etcd: 3 members (Raft, fsync on every commit, its default), linearizable Range"
        " and Put over grpc.aio, calls spread over the members in turn.",
    }
    return " ".join(described[store] for store in stores)


def table(rows: Mapping[str, Mapping[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    stores = [s for s in STORES if s in args.stores]
    lines = [
        f"Workloads with {args.value_size}-byte values over {args.records} records, concurrency"
        f" {args.concurrency}, closed loop, {args.duration:g} s measured after {args.warmup:g} s"
        f" warm-up, median of {args.repeat} run(s). {describe_stores(stores)} All on 127.0.0.1,"
        " one kvbench client process each.",
        "",
        "| workload | store | ops/s | op: p50 / p99 ms | errors | not found | CPU µs/op: client"
        " | servers (sum) | per server |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, by_store in rows.items():
        for store in stores:
            row = by_store[store]
            latency = "; ".join(f"{op}: {p50:.1f} / {p99:.1f}"
                                for op, (p50, p99) in row["latency_ms"].items())  # fmt: skip
            servers = ", ".join(f"{name} {us:.0f}" for name, us in row["cpu_us_per_op"].items()
                                if name != "client")  # fmt: skip
            lines.append(
                f"| {workload.upper()} | {store} | {row['ops_s']:.0f} | {latency} |"
                f" {row['errors']} | {row.get('not_found', 0)} |"
                f" {row['cpu_us_per_op'].get('client', 0):.0f} |"
                f" {row['server_cpu_us_per_op']:.0f} | {servers} |"
            )
    if "kvstore" not in stores:
        return "\n".join(lines) + "\n"
    for other in (s for s in stores if s != "kvstore"):
        lines += [
            "",
            f"Ratios, kvstore / {LABELS[other]} (throughput above 1 means kvstore is faster;"
            " latency and CPU above 1 mean kvstore is slower or costlier):",
            "",
            "| workload | throughput | p50 | p99 | client CPU/op | server CPU/op |",
            "|---|---|---|---|---|---|",
        ]
        for workload, by_store in rows.items():
            lines.append(ratio_row(workload, by_store["kvstore"], by_store[other]))
    return "\n".join(lines) + "\n"


def ratio_row(workload: str, kv: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    ops = sorted(set(kv["latency_ms"]) & set(other["latency_ms"]))
    p50 = "; ".join(f"{op} {ratio(kv['latency_ms'][op][0], other['latency_ms'][op][0])}"
                    for op in ops)  # fmt: skip
    p99 = "; ".join(f"{op} {ratio(kv['latency_ms'][op][1], other['latency_ms'][op][1])}"
                    for op in ops)  # fmt: skip
    client = ratio(kv["cpu_us_per_op"].get("client", 0), other["cpu_us_per_op"].get("client", 0))
    return (
        f"| {workload.upper()} | {ratio(kv['ops_s'], other['ops_s'])} | {p50} | {p99} |"
        f" {client} | {ratio(kv['server_cpu_us_per_op'], other['server_cpu_us_per_op'])} |"
    )


def python_speed() -> float:
    """Seconds this machine takes for 10 million additions in a pure-Python loop (best of 3):
    figures from days when the machine was slower or faster differ by about this ratio."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - began)
    return best


def sweep_section(sweeps: Mapping[str, list[Result]], workload: str, args: Any) -> str:
    """The open-loop latency-at-load rows of every store run, one per target rate."""
    return (
        f"\nLatency at load: workload {workload.upper()}, open loop (latency from each"
        f" operation's intended start), {args.duration:g} s per rate after {args.warmup:g} s"
        " warm-up; operations still unsent well past the end are given up and counted as"
        " errors (NotSent); latencies past 60 s are clipped to 60 s (counted in `clipped`).\n\n"
        + report.sweep_table(
            [_labelled(step, store) for store in args.stores for step in sweeps[store]]
        )
        + "\n"
    )


def _labelled(step: Result, store: str) -> Result:
    """A sweep step named by the store it ran against (kvstore-sync runs kvbench's kvstore
    adapter, whose own name would not tell the two clusters apart)."""
    return {**step, "config": {**step["config"], "store": store}}


def run_order(stores: Sequence[str], attempt: int) -> list[str]:
    """Who goes first rotates between repeats, so no store always meets a warmer (or more
    tired) machine; with two stores this alternates them."""
    shift = attempt % len(stores)
    return [*stores[shift:], *stores[:shift]]


def measure_floor(
    args: argparse.Namespace, targets: Mapping[str, list[str]], seeds: str | None, raw: Path
) -> dict[str, Any]:
    """The echo's p50/p99 and, when kvstore runs, its lone get and put through the async
    client (kvbench at concurrency 1, workload A) and the sync Client (a timed loop)."""
    result: dict[str, Any] = {"echo": floor.echo_floor(args.floor_duration)}
    if seeds is not None:
        path = raw / "floor-kvstore-async.json"
        kvbench(
            [
                "run",
                "--workload",
                "a",
                "--concurrency",
                "1",
                "--duration",
                str(args.floor_duration),
                "--warmup",
                str(floor.WARMUP_S),
                "--json",
                str(path),
                "--records",
                str(args.records),
                "--value-size",
                str(args.value_size),
                *targets["kvstore"],
            ],
            timeout=args.floor_duration + 120,
            credentials={},
        )
        result["kvstore"] = {
            "async": floor.kvbench_rows(json.loads(path.read_text())),
            "sync": floor.sync_client_loop(
                seeds, args.records, args.floor_duration, value_size=args.value_size
            ),
        }
    return floor.with_ratios(result)


def compare(args: argparse.Namespace, work: Path, command: str) -> Path:
    stores: list[str] = args.stores
    if "redis" in stores:
        ensure_redis_server()
    if "etcd" in stores:
        ensure_etcd_server()
    speed = python_speed()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / f"compare-{stamp}"
    raw = out / "raw"
    raw.mkdir(parents=True)
    per_run = args.duration + args.warmup + 120  # bound on one kvbench process
    shape = ["--records", str(args.records), "--value-size", str(args.value_size),
             "--concurrency", str(args.concurrency)]  # fmt: skip
    # All ports in one call: two calls could hand out the same port twice (and each cluster
    # picks its client and metrics ports avoiding all of them).
    ports = free_ports(3 + 3 + 6 + 3 + 3)
    floor_result: dict[str, Any] | None = None
    with contextlib.ExitStack() as started:  # stops whatever was started, in reverse order
        targets: dict[str, list[str]] = {}
        credentials: dict[str, dict[str, str]] = {}
        seeds = None
        if "kvstore" in stores:
            cluster = started.enter_context(
                LocalCluster(3, work / "kvstore", ports=ports[:3], avoid_ports=ports)
            )
            cluster.start()
            seeds = cluster.seeds
            nodes = {f"node-{n.index}": n.pid or 0 for n in cluster.nodes}
            targets["kvstore"] = store_arguments("kvstore", cluster.seeds, nodes)
        if "kvstore-sync" in stores:
            durable = started.enter_context(
                LocalCluster(
                    3,
                    work / "kvstore-sync",
                    ports=ports[12:15],
                    avoid_ports=ports,
                    extra_args=("--sync-writes",),
                )
            )
            durable.start()
            nodes = {f"sync-node-{n.index}": n.pid or 0 for n in durable.nodes}
            targets["kvstore-sync"] = store_arguments("kvstore", durable.seeds, nodes)
        if "kvstore-tls" in stores:
            secure = started.enter_context(
                LocalCluster(
                    3,
                    work / "kvstore-tls",
                    ports=ports[15:18],
                    avoid_ports=ports,
                    tls_dir=work / "tls",
                )
            )
            secure.start()
            nodes = {f"tls-node-{n.index}": n.pid or 0 for n in secure.nodes}
            targets["kvstore-tls"] = store_arguments("kvstore", secure.seeds, nodes)
            credentials["kvstore-tls"] = {
                k: v
                for k, v in secure.client_credentials(role="write").items()
                if k in ("KVSTORE_TLS_CA", "KVSTORE_TOKEN")
            }
        if "redis" in stores:
            redis = started.enter_context(RedisReplicaSet(work / "redis", ports[3:6]))
            redis.start()
            targets["redis"] = store_arguments("redis", redis.primary, redis.pids)
        if "etcd" in stores:
            etcd = started.enter_context(EtcdCluster(work / "etcd", ports[6:12]))
            etcd.start()
            targets["etcd"] = store_arguments("etcd", etcd.endpoints, etcd.pids)
        for store in stores:
            kvbench(
                ["load", *shape, *targets[store]],
                timeout=per_run + args.records / 50,
                credentials=credentials.get(store, {}),
            )
        if not args.no_floor:
            floor_result = measure_floor(args, targets, seeds, raw)
        results: dict[str, dict[str, list[Result]]] = {}
        for workload in args.workloads:
            results[workload] = {store: [] for store in stores}
            for attempt in range(args.repeat):
                for store in run_order(stores, attempt):
                    path = raw / f"{workload}-{store}-{attempt}.json"
                    kvbench(
                        ["run", "--workload", workload, "--duration", str(args.duration),
                         "--warmup", str(args.warmup), "--json", str(path), *shape,
                         *targets[store]],
                        timeout=per_run,
                        credentials=credentials.get(store, {}),
                    )  # fmt: skip
                    results[workload][store].append(json.loads(path.read_text()))
        if args.rate_sweep:
            for store in stores:
                kvbench(
                    ["run", "--workload", args.workloads[0], "--duration", str(args.duration),
                     "--warmup", str(args.warmup), "--rate-sweep", args.rate_sweep,
                     "--json", str(raw / f"sweep-{store}.json"), *shape, *targets[store]],
                    timeout=per_run * (args.rate_sweep.count(",") + 1),
                    credentials=credentials.get(store, {}),
                )  # fmt: skip

    rows = {
        w: {store: headline(median_run(results[w][store])) for store in stores}
        for w in args.workloads
    }
    text = table(rows, args)
    if args.rate_sweep:
        sweeps = {s: json.loads((raw / f"sweep-{s}.json").read_text())["sweep"] for s in stores}
        text += sweep_section(sweeps, args.workloads[0], args)
    if floor_result is not None:
        text += floor.section(floor_result, args.floor_duration)
    machine = (
        f"Machine: {os.cpu_count()} cores; a pure-Python loop of 10 million additions took"
        f" {speed:.2f} s (best of 3) before the run."
    )
    title = " vs ".join(LABELS[store] for store in stores)
    (out / "summary.md").write_text(f"# {title}, {stamp}\n\n`{command}`\n\n{machine}\n\n{text}")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "command": command,
                "args": _jsonable(vars(args)),
                "python_loop_10M_s": speed,
                "rows": rows,
                "floor": floor_result,
            },
            indent=2,
        )
    )
    if not args.no_plots:
        plots = [str(raw / f"{w}-{s}-0.json") for w in args.workloads for s in stores]
        plots += [str(p) for p in sorted(raw.glob("sweep-*.json"))]
        done = subprocess.run([*KVBENCH, "plot", *plots, "--out", str(out)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            print(f"compare: plots failed: {done.stderr[-1000:]}", file=sys.stderr)
    print(text)
    return out


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "bench/compare " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        with tempfile.TemporaryDirectory(prefix="kvstore-compare-") as work:
            out = compare(args, Path(work), command.strip())
    except (
        RedisUnavailable,
        EtcdUnavailable,
        ClusterError,
        RuntimeError,
        subprocess.TimeoutExpired,
    ) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

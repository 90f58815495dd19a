"""The machine's floor, for bench/compare: how long one grpc.aio unary call takes here at
concurrency 1 (an echo of ~100 bytes between two processes on 127.0.0.1), and kvstore's lone
put and get as multiples of it. A kvstore operation is at least one such call, so the ratio
says how much of a lone operation is kvstore's own (issue 14's target: p50 <= 2x the echo's).

The echo server runs in a process of its own (python -m kvstore.bench.wire.echo), started here,
tracked by its pid and stopped by that pid, also on failure or interrupt.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from kvstore.bench.histograms import LatencyRecorder
from kvstore.bench.wire.echo import time_echo
from kvstore.bench.workloads import key_name
from kvstore.client import Client
from kvstore.node.local_cluster import free_ports

ECHO_PAYLOAD = b"x" * 100
WARMUP_S = 0.5  # before each timed loop: connections made, first-call costs paid
MAX_SYNC_OPS = 1_000_000  # a bound on the sync loop, whatever the duration
TARGET_RATIO = 2.0  # issue 14: put and get p50 <= 2x the echo p50


def echo_floor(duration: float, warmup: float = WARMUP_S) -> dict[str, Any]:
    """p50/p99 (ms) and count of grpc.aio unary echoes sent one at a time for `duration` s."""
    (port,) = free_ports(1)
    # The server stops by itself well after the loop would have ended, should this process die.
    lifetime = duration + warmup + 60
    server = subprocess.Popen(
        [sys.executable, "-m", "kvstore.bench.wire.echo", "--port", str(port),
         "--max-seconds", str(lifetime)],
        # Its stderr is read only if it dies before listening (it says little otherwise).
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_listening(port, server)
        latencies = asyncio.run(
            time_echo(f"127.0.0.1:{port}", duration, warmup=warmup, payload=ECHO_PAYLOAD)
        )
    except Exception as exc:
        raise RuntimeError(f"the echo floor could not be timed: {exc!r}") from exc
    finally:
        _stop(server)
    recorder = LatencyRecorder()
    for seconds in latencies:
        recorder.record("echo", seconds)
    return _row(recorder, "echo")


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the server accepts connections (bounded). A gRPC channel that met a refused
    connection first would back off for a second or more before trying again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
            raise RuntimeError(f"the echo server exited with status {process.returncode}: {said}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the echo server did not listen on port {port} within {timeout:g} s")


def _stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def sync_client_loop(
    seeds: str,
    records: int,
    duration: float,
    value_size: int = 100,
    warmup: float = WARMUP_S,
    seed: int = 1,
) -> dict[str, dict[str, Any]]:
    """kvstore's sync Client, one call at a time: a get of a random loaded key, then a put of
    it with that get's context (so it replaces what it read and siblings never pile up), for
    `duration` s after `warmup` s. p50/p99 (ms) and counts of "get" and "put"."""
    rng = random.Random(seed)
    value = rng.randbytes(value_size)
    recorder = LatencyRecorder()
    with Client(seeds, timeout=5.0, tls=False) as kv:  # compare's plaintext cluster
        began = time.perf_counter()
        record_from, stop_at = began + warmup, began + warmup + duration
        for _ in range(MAX_SYNC_OPS):
            key = key_name(rng.randrange(records))
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            got = kv.get(key)
            put_sent = time.perf_counter()
            kv.put(key, value, context=got.context)
            done = time.perf_counter()
            if sent >= record_from:
                recorder.record("get", put_sent - sent)
                recorder.record("put", done - put_sent)
    return {op: _row(recorder, op) for op in ("get", "put")}


def _row(recorder: LatencyRecorder, op: str) -> dict[str, Any]:
    summary = recorder.summary(op)
    if not summary.count:
        raise RuntimeError(f"no {op} was timed: the floor loop ran no call")
    return {"count": summary.count, "p50_ms": summary.p50_ms, "p99_ms": summary.p99_ms}


def kvbench_rows(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """get (read) and put (update) of a kvbench --json document, as floor rows."""
    operations = document["operations"]
    return {
        op: {"count": operations[name]["count"], "p50_ms": operations[name]["p50_ms"],
             "p99_ms": operations[name]["p99_ms"]}
        for op, name in (("get", "read"), ("put", "update"))
    }  # fmt: skip


def with_ratios(floor: dict[str, Any]) -> dict[str, Any]:
    """Each kvstore row gets its p50 as a multiple of the echo's p50."""
    echo_p50 = floor["echo"]["p50_ms"]
    for rows in floor.get("kvstore", {}).values():
        for row in rows.values():
            row["p50_over_echo_p50"] = row["p50_ms"] / echo_p50 if echo_p50 else float("nan")
    return floor


CLIENT_LABELS = {
    "async": "AsyncClient (kvbench, workload A, concurrency 1)",
    "sync": "Client (sync, get then put with its context)",
}


def section(floor: Mapping[str, Any], duration: float) -> str:
    """The summary's floor section: the echo's p50/p99 and kvstore's lone operations."""
    echo = floor["echo"]
    lines = [
        "",
        "## The machine's floor (concurrency 1)",
        "",
        f"A grpc.aio unary echo of {len(ECHO_PAYLOAD)}-byte messages, one at a time, client and"
        f" server in separate processes on 127.0.0.1, {duration:g} s after {WARMUP_S:g} s"
        f" warm-up: **p50 {echo['p50_ms']:.3f} ms, p99 {echo['p99_ms']:.3f} ms**"
        f" ({echo['count']} calls). No operation over gRPC here can be faster. Target (issue"
        f" 14): kvstore's put and get p50 <= {TARGET_RATIO:g}x the echo's p50.",
        "",
    ]
    kvstore = floor.get("kvstore")
    if not kvstore:
        return "\n".join(lines) + "\n"
    lines += [
        "| client | op | calls | p50 ms | p99 ms | p50 / echo p50 | target met |",
        "|---|---|---|---|---|---|---|",
        f"| grpc.aio echo | echo | {echo['count']} | {echo['p50_ms']:.3f} |"
        f" {echo['p99_ms']:.3f} | 1.00 | |",
    ]
    for client, rows in kvstore.items():
        for op, row in rows.items():
            ratio = row["p50_over_echo_p50"]
            lines.append(
                f"| kvstore {CLIENT_LABELS.get(client, client)} | {op} | {row['count']} |"
                f" {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {ratio:.2f} |"
                f" {'yes' if ratio <= TARGET_RATIO else 'no'} |"
            )
    lines.append(
        "\nThe async put is kvbench's update (a put with return_body, carrying the last context"
        " seen); the sync put carries the context of the get just before it."
    )
    return "\n".join(lines) + "\n"

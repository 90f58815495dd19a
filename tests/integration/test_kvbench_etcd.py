"""kvbench's etcd adapter against a real 3-member etcd, the echo floor's server, and
bench/compare end to end on all three stores with the floor. etcd comes from Debian's
etcd-server (`make test` installs it when missing; without it these tests fail, loudly)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvstore._pb.etcd import rpc_pb2, rpc_pb2_grpc
from kvstore.bench import floor
from kvstore.bench.etcd_local import EtcdCluster, member_healthy, member_status
from kvstore.bench.wire.echo import time_echo
from kvstore.bench.workloads import key_name
from kvstore.node.local_cluster import free_ports

pytestmark = pytest.mark.integration
KVBENCH = [sys.executable, "-m", "kvstore.bench.cli"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], capture_output=True, text=True, timeout=timeout)


def etcd_range(address: str, **fields: object) -> rpc_pb2.RangeResponse:
    """One Range straight through the generated stub (not the adapter under test)."""

    async def call() -> rpc_pb2.RangeResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            response: rpc_pb2.RangeResponse = await stub.Range(
                rpc_pb2.RangeRequest(**fields), timeout=5.0
            )
            return response

    return asyncio.run(call())


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), free_ports(6)) as started:
        started.start()
        yield started


def test_three_members_follow_one_leader_and_are_healthy(etcd: EtcdCluster) -> None:
    statuses = [member_status(address) for address in etcd.addresses]
    leaders = {status["leader"] for status in statuses}
    members = {status["header"]["member_id"] for status in statuses}  # type: ignore[index]
    assert len(members) == 3 and len(leaders) == 1 and leaders <= members
    assert all(member_healthy(address) for address in etcd.addresses)
    assert len(set(etcd.pids.values())) == 3


def test_load_and_run_write_through_raft_and_read_back(etcd: EtcdCluster, tmp_path: Path) -> None:
    common = ("--store", "etcd", "--seeds", etcd.endpoints, "--quiet")
    before = etcd_range(etcd.addresses[0], key=b"\0").header.revision
    loaded = run(*KVBENCH, "load", *common, "--records", "300", "--concurrency", "16")
    assert loaded.returncode == 0, loaded.stderr
    assert "[INSERT], Operations, 300" in loaded.stdout
    # Every record is in etcd, read back by a linearizable Range from another member.
    prefix = etcd_range(etcd.addresses[2], key=b"user", range_end=b"uses", count_only=True)
    assert prefix.count == 300
    for number in range(0, 300, 29):
        got = etcd_range(etcd.addresses[number % 3], key=key_name(number).encode())
        assert [len(kv.value) for kv in got.kvs] == [100], number
    # Each insert was one Put: one revision each.
    assert prefix.header.revision - before == 300

    out = tmp_path / "a.json"
    pids = [f"--server-pid={name}={pid}" for name, pid in etcd.pids.items()]
    ran = run(*KVBENCH, "run", *common, "--records", "400", "--workload", "a", "--ops", "600",
              "--concurrency", "16", "--json", str(out), *pids)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    document = json.loads(out.read_text())
    assert document["completed"] == 600 and document["errors"] == {}
    assert set(document["operations"]) == {"read", "update"}
    # Keys 300..399 were never loaded: reads of them are not found, and nothing else is.
    reads = document["operations"]["read"]["count"]
    assert 0 < document["not_found"]["read"] < reads and document["not_found"]["update"] == 0
    assert "[READ], Return=NOT_FOUND, " in ran.stdout
    # Every member worked (calls go to each in turn) and its CPU is counted.
    assert set(document["cpu_us_per_op"]) == {"client", *etcd.pids}
    assert all(document["cpu_s"][name] > 0 for name in etcd.pids)
    # The run's updates moved the revision by exactly their number: no write lost or doubled.
    updates = document["operations"]["update"]["count"]
    after = etcd_range(etcd.addresses[1], key=b"\0").header.revision
    assert 200 < updates < 400 and after - before == 300 + updates


def test_options_etcd_cannot_honour_are_refused(etcd: EtcdCluster) -> None:
    refused = run(*KVBENCH, "run", "--store", "etcd", "--seeds", etcd.endpoints, "--workload",
                  "c", "--ops", "10", "--w", "2")  # fmt: skip
    assert refused.returncode == 2 and "no --r/--w" in refused.stderr, refused.stderr


def test_the_echo_server_echoes_and_stops_on_sigterm() -> None:
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "kvstore.bench.wire.echo", "--port", str(port),
         "--max-seconds", "60"],
    )  # fmt: skip
    try:
        floor.wait_listening(port, server)
        latencies = asyncio.run(time_echo(f"127.0.0.1:{port}", duration=0.5, warmup=0.1))
        # Timed one at a time: many calls in half a second, each a real round trip. (No
        # bound on the slowest: a loaded machine may stall one call; the median is robust.)
        assert len(latencies) > 10 and min(latencies) > 0, latencies[:20]
        assert sorted(latencies)[len(latencies) // 2] < 0.1, sorted(latencies)[-5:]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0


def test_the_echo_floor_leaves_no_server_behind() -> None:
    before = set(os.listdir("/proc"))
    began = time.monotonic()
    echo = floor.echo_floor(duration=0.3, warmup=0.1)
    assert echo["count"] > 10 and 0 < echo["p50_ms"] <= echo["p99_ms"]
    assert time.monotonic() - began < 30
    started = {entry for entry in set(os.listdir("/proc")) - before if entry.isdigit()}
    for pid in started:  # any process that appeared meanwhile is not an echo server of ours
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"kvstore.bench.wire.echo" not in command


def test_compare_runs_all_three_stores_and_the_floor(tmp_path: Path) -> None:
    done = run(
        sys.executable, "-m", "kvstore.bench.compare", "--workloads", "a", "--records", "200",
        "--duration", "1", "--warmup", "0.3", "--concurrency", "16", "--no-plots",
        "--floor-duration", "0.5", "--out", str(tmp_path), timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (out,) = tmp_path.iterdir()
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# kvstore vs Redis vs etcd, ")
    for store in ("kvstore", "redis", "etcd"):
        assert f"| A | {store} |" in summary
    document = json.loads((out / "summary.json").read_text())
    rows = document["rows"]["a"]
    for store in ("kvstore", "redis", "etcd"):
        assert rows[store]["ops_s"] > 0 and rows[store]["errors"] == 0
        assert rows[store]["not_found"] == 0  # every key was loaded first
        assert rows[store]["cpu_us_per_op"]["client"] > 0
    assert {"etcd-0", "etcd-1", "etcd-2"} <= set(rows["etcd"]["cpu_us_per_op"])
    assert all(rows["etcd"]["cpu_us_per_op"][f"etcd-{i}"] > 0 for i in range(3))
    etcd_ratio = f"| A | {rows['kvstore']['ops_s'] / rows['etcd']['ops_s']:.2f} |"
    redis_ratio = f"| A | {rows['kvstore']['ops_s'] / rows['redis']['ops_s']:.2f} |"
    assert "kvstore / etcd" in summary and etcd_ratio in summary and redis_ratio in summary
    # The floor: the echo's p50/p99, and kvstore's lone get and put from both clients.
    assert "## The machine's floor (concurrency 1)" in summary
    measured = document["floor"]
    echo = measured["echo"]
    assert echo["count"] > 10 and 0 < echo["p50_ms"] <= echo["p99_ms"]
    assert f"p50 {echo['p50_ms']:.3f} ms, p99 {echo['p99_ms']:.3f} ms" in summary
    for client in ("async", "sync"):
        for op in ("get", "put"):
            lone = measured["kvstore"][client][op]
            assert lone["count"] > 0 and lone["p50_ms"] > 0
            assert lone["p50_over_echo_p50"] == pytest.approx(lone["p50_ms"] / echo["p50_ms"])
    # Every server it started is gone: the pids it watched no longer exist.
    watched = set()
    for raw in (out / "raw").glob("*.json"):
        watched |= set(json.loads(raw.read_text())["config"]["server_pids"].values())
    assert len(watched) == 9
    for pid in watched:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

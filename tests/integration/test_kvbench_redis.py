"""kvbench's Redis adapter against a real primary with two replicas, and bench/compare end to
end on kvstore and Redis (--stores; all three with the floor: test_kvbench_etcd.py). redis-server
comes from Debian (`make test` installs it when missing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from kvstore.bench.redis_local import RedisReplicaSet, info
from kvstore.bench.workloads import key_name
from kvstore.node.local_cluster import free_ports

pytestmark = pytest.mark.integration
KVBENCH = [sys.executable, "-m", "kvstore.bench.cli"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*args], capture_output=True, text=True, timeout=timeout)


def wait_calls(address: str) -> int:
    """How many WAIT commands the server ran since its statistics were last reset."""
    with redis.Redis(*address.split(":")) as r:
        return int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def reset_stats(address: str) -> None:
    with redis.Redis(*address.split(":")) as r:
        r.config_resetstat()


@pytest.fixture(scope="module")
def replica_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisReplicaSet]:
    with RedisReplicaSet(tmp_path_factory.mktemp("redis"), free_ports(3)) as started:
        started.start()
        yield started


def test_replica_set_is_a_primary_with_two_synced_replicas(replica_set: RedisReplicaSet) -> None:
    primary = info(replica_set.primary)
    assert primary["role"] == "master" and primary["connected_slaves"] == "2"
    for address in replica_set.addresses[1:]:
        replica = info(address)
        assert replica["role"] == "slave" and replica["master_link_status"] == "up"


def test_load_and_run_reach_the_replicas(replica_set: RedisReplicaSet, tmp_path: Path) -> None:
    common = ("--store", "redis", "--seeds", replica_set.primary, "--records", "300", "--quiet")
    reset_stats(replica_set.primary)
    loaded = run(*KVBENCH, "load", *common, "--concurrency", "16")
    assert loaded.returncode == 0, loaded.stderr
    assert "[INSERT], Operations, 300" in loaded.stdout
    out = tmp_path / "a.json"
    pids = [f"--server-pid={name}={pid}" for name, pid in replica_set.pids.items()]
    # 6,000 operations: Redis spends ~10 µs on one, and the kernel counts CPU time in 10 ms
    # ticks, so 600 could add up to no tick at all on the primary (seen in CI).
    ran = run(*KVBENCH, "run", *common, "--workload", "a", "--ops", "6000", "--concurrency",
              "16", "--json", str(out), *pids)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    document = json.loads(out.read_text())
    assert document["completed"] == 6000 and document["errors"] == {}
    assert set(document["operations"]) == {"read", "update"}
    assert set(document["cpu_us_per_op"]) == {"client", *replica_set.pids}
    assert document["cpu_s"]["redis-primary"] > 0
    # Every write (300 inserts, then the run's updates) was followed by its own WAIT.
    updates = document["operations"]["update"]["count"]
    assert 2_700 < updates < 3_300 and wait_calls(replica_set.primary) == 300 + updates
    # Each write returned only after WAIT 1: at least one replica holds every record now.
    replicas = [redis.Redis(*a.split(":")) for a in replica_set.addresses[1:]]
    try:
        for number in range(0, 300, 13):
            key = key_name(number)
            values = [r.get(key) for r in replicas]
            assert any(v is not None and len(v) == 100 for v in values), key
    finally:
        for r in replicas:
            r.close()


def test_batches_are_pipelined_and_still_wait_for_a_replica(
    replica_set: RedisReplicaSet, tmp_path: Path
) -> None:
    out = tmp_path / "f.json"
    reset_stats(replica_set.primary)
    ran = run(*KVBENCH, "run", "--store", "redis", "--seeds", replica_set.primary, "--records",
              "300", "--workload", "f", "--ops", "500", "--batch", "20", "--concurrency", "4",
              "--json", str(out), "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    document = json.loads(out.read_text())
    assert document["completed"] == 500 and document["errors"] == {}
    assert document["config"]["batch"] == 20
    # 500 operations in 25 pipelines of 20, each with writes (half are read-modify-writes):
    # one WAIT per pipeline, not per write.
    assert wait_calls(replica_set.primary) == 25


@pytest.mark.parametrize(
    ("option", "message"), [(("--r", "2"),  "--r must be 1"), (("--w", "0"), "1..16"),
                            (("--seeds", "nohost"), "HOST:PORT")],
)  # fmt: skip
def test_redis_options_it_cannot_honour_are_refused(
    replica_set: RedisReplicaSet, option: tuple[str, str], message: str
) -> None:
    refused = run(*KVBENCH, "run", "--store", "redis", "--seeds", replica_set.primary,
                  "--workload", "c", "--ops", "10", *option)  # fmt: skip
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_compare_measures_both_stores_and_stops_what_it_started(tmp_path: Path) -> None:
    done = run(
        sys.executable, "-m", "kvstore.bench.compare", "--workloads", "a,c", "--records", "200",
        "--duration", "1.5", "--warmup", "0.3", "--concurrency", "16", "--out", str(tmp_path),
        "--rate-sweep", "40,80", "--stores", "kvstore,redis", "--no-floor", timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (out,) = tmp_path.iterdir()
    summary = (out / "summary.md").read_text()
    for workload in ("A", "C"):
        for store in ("kvstore", "redis"):
            assert f"| {workload} | {store} |" in summary
    assert "a pure-Python loop of 10 million additions took" in summary
    document = json.loads((out / "summary.json").read_text())
    assert 0 < document["python_loop_10M_s"] < 60
    rows = document["rows"]
    for workload in ("a", "c"):
        for store in ("kvstore", "redis"):
            row = rows[workload][store]
            assert row["ops_s"] > 0 and row["errors"] == 0
            assert row["cpu_us_per_op"]["client"] > 0 and row["server_cpu_us_per_op"] > 0
    ratio_a = f"| A | {rows['a']['kvstore']['ops_s'] / rows['a']['redis']['ops_s']:.2f} |"
    assert ratio_a in summary
    sweep_rows = [
        line for line in summary.splitlines() if line.startswith(("| kvstore | ", "| redis | "))
    ]
    assert [row.split(" | ")[:2] for row in sweep_rows] == [
        ["| kvstore", "40"], ["| kvstore", "80"], ["| redis", "40"], ["| redis", "80"]
    ]  # fmt: skip
    assert {"throughput.png", "latency_percentiles.png"} <= {p.name for p in out.iterdir()}
    # Every server it started is gone: the pids it watched no longer exist.
    watched = set()
    for raw in (out / "raw").glob("*.json"):
        document = json.loads(raw.read_text())
        for step in document.get("sweep", [document]):
            watched |= set(step["config"]["server_pids"].values())
    assert len(watched) == 6
    for pid in watched:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

"""kvbench end to end against a real local cluster."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore import Client
from kvstore.bench.workloads import key_name
from kvstore.node.local_cluster import LocalCluster

pytestmark = pytest.mark.integration
KVBENCH = [sys.executable, "-m", "kvstore.bench.cli"]


def kvbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVBENCH, *args], capture_output=True, text=True, timeout=120)


def test_load_then_run_workload_a_with_two_processes(cluster: LocalCluster, tmp_path: Path) -> None:
    seeds = ("--seeds", cluster.seeds, "--records", "300")
    loaded = kvbench("load", *seeds, "--concurrency", "8", "--processes", "2", "--quiet")
    assert loaded.returncode == 0, loaded.stderr
    assert "[INSERT], Operations, 300" in loaded.stdout
    with Client(cluster.seeds) as kv:  # every record is there, once
        assert all(kv.get(key_name(i)).found for i in range(0, 300, 7))

    out_json, out_csv = tmp_path / "a.json", tmp_path / "a.csv"
    ran = kvbench(
        "run", *seeds, "--workload", "a", "--ops", "600", "--concurrency", "8",
        "--processes", "2", "--json", str(out_json), "--csv", str(out_csv), "--quiet",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    document = json.loads(out_json.read_text())
    assert document["completed"] + sum(document["errors"].values()) == 600
    assert document["errors"] == {}
    assert set(document["operations"]) == {"read", "update"}
    assert document["throughput"] > 0 and document["config"]["processes"] == 2
    rows = list(csv.DictReader(out_csv.open()))
    assert sum(int(r["count"]) for r in rows) == 600


def test_scan_workload_is_refused_clearly(cluster: LocalCluster) -> None:
    refused = kvbench("run", "--seeds", cluster.seeds, "--workload", "e", "--ops", "10")
    assert refused.returncode == 2 and "no range scans" in refused.stderr


def test_batched_runs_use_get_many_and_put_many_and_count_misses(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    seeds = ("--seeds", cluster.seeds, "--records", "200")
    loaded = kvbench("load", *seeds, "--batch", "25", "--concurrency", "4", "--quiet")
    assert loaded.returncode == 0, loaded.stderr
    assert "[INSERT], Operations, 200" in loaded.stdout
    with Client(cluster.seeds) as kv:
        assert all(kv.get(key_name(i)).found for i in range(200))
        before = sum(kv.status(a).counters["group_commit_writes"] for a in cluster.addresses)

    out = tmp_path / "f.json"
    # Workload F over 400 records of which 200 exist: about half the reads miss.
    ran = kvbench(
        "run", "--seeds", cluster.seeds, "--records", "400", "--workload", "f", "--ops", "400",
        "--batch", "20", "--concurrency", "4", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    document = json.loads(out.read_text())
    assert document["errors"] == {} and document["completed"] == 400
    missed = sum(document["not_found"].values())
    assert 0 < missed < 400
    with Client(cluster.seeds) as kv:
        after = sum(kv.status(a).counters["group_commit_writes"] for a in cluster.addresses)
    assert after > before  # the batch's writes went through the nodes' group commit


def test_compare_runs_a_second_kvstore_cluster_with_sync_writes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvstore.bench.compare", "--workloads", "a", "--records", "200",
         "--duration", "1.5", "--warmup", "0.3", "--concurrency", "16", "--out", str(tmp_path),
         "--stores", "kvstore,kvstore-sync", "--no-floor", "--no-plots"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (out,) = tmp_path.iterdir()
    summary = (out / "summary.md").read_text()
    assert "| A | kvstore |" in summary and "| A | kvstore-sync |" in summary
    assert "Ratios, kvstore / kvstore with sync_writes" in summary
    rows = json.loads((out / "summary.json").read_text())["rows"]["a"]
    assert rows["kvstore-sync"]["ops_s"] > 0 and rows["kvstore-sync"]["errors"] == 0
    # Its own three nodes, watched for CPU beside the default cluster's.
    assert {"sync-node-0", "sync-node-1", "sync-node-2"} <= set(
        rows["kvstore-sync"]["cpu_us_per_op"]
    )

"""The metrics endpoints of a real cluster under kvbench: every request kvbench made is counted
once, by the node that took it, with its latency; storage is measured; `kvstore top` reads
them. And a node's JSON log: every line an object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvstore.node.local_cluster import LocalCluster
from tests.conftest import free_ports

pytestmark = pytest.mark.integration
KVBENCH = [sys.executable, "-m", "kvstore.bench.cli"]
KVSTORE = [sys.executable, "-m", "kvstore.cli.main"]
# kvbench's operations as the requests they make of kvstore (bench.adapters.KvstoreStore).
REQUEST_OF = {"INSERT": "put", "UPDATE": "put", "READ": "get"}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[LocalCluster]:
    """A cluster of this module's own: its request counts start at zero."""
    with LocalCluster(
        3, tmp_path_factory.mktemp("metrics"), ports=free_ports(3), tls_dir=tls_dir
    ) as started:
        started.start()
        yield started


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A node's samples: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_label(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> Counter[tuple[tuple[str, str], ...]]:
    return Counter({labels: v for (n, labels), v in samples.items() if n == name})


def operations(stdout: str) -> Counter[str]:
    """kvbench's own count of completed operations, by kvstore request."""
    counted: Counter[str] = Counter()
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1] == "Operations":
            counted[REQUEST_OF[parts[0].strip("[]")]] += int(parts[2])
    return counted


def test_request_counts_match_what_kvbench_did(fresh: LocalCluster, tmp_path: Path) -> None:
    endpoints = [node.metrics_address for node in fresh.nodes]
    before = [scrape(e) for e in endpoints]
    for samples in before:  # a fresh cluster: nothing counted yet, every series there
        requests = by_label(samples, "kvstore_requests_total")
        assert requests and sum(requests.values()) == 0
    baseline_bytes = sum(
        samples.get(("kvstore_storage_sst_files_bytes", ()), 0)
        + samples.get(("kvstore_storage_memtable_bytes", ()), 0)
        for samples in before
    )

    # Without hedges the nodes serve exactly the calls kvbench makes (a hedge is a second
    # request for one operation; retries only follow failures, and the run has none).
    seeds = ("--seeds", fresh.seeds, "--records", "300", "--no-hedge")
    loaded = subprocess.run(
        [*KVBENCH, "load", *seeds, "--concurrency", "8", "--quiet",
         "--json", str(tmp_path / "l.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    # The run, scraped while it runs too: the endpoint answers under load.
    run = subprocess.Popen(
        [*KVBENCH, "run", *seeds, "--workload", "a", "--ops", "1500", "--concurrency", "8",
         "--quiet", "--json", str(tmp_path / "r.json"), "--status-interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    during = 0
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        during += all(by_label(scrape(e), "kvstore_requests_total") for e in endpoints)
        time.sleep(0.2)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert during >= 1
    assert " ops/s, " in stderr  # status lines: stderr is a pipe here
    for document in (tmp_path / "l.json", tmp_path / "r.json"):
        assert json.loads(document.read_text())["errors"] == {}

    expected = operations(loaded.stdout) + operations(stdout)
    assert expected["put"] == 300 + operations(stdout)["put"]
    assert expected["get"] > 0 and expected["put"] > 300

    after = [scrape(e) for e in endpoints]
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for samples in after:
        requests = by_label(samples, "kvstore_requests_total")
        latencies = by_label(samples, "kvstore_request_duration_seconds_count")
        per_op: Counter[str] = Counter()
        for labels, value in requests.items():
            label = dict(labels)
            per_op[label["operation"]] += value
            (ok if label["outcome"] == "ok" else failed)[label["operation"]] += value
        # Every request's latency was observed, once.
        assert {dict(k)["operation"]: v for k, v in latencies.items() if v} == {
            op: v for op, v in per_op.items() if v
        }
        assert samples[("kvstore_storage_estimated_keys", ())] > 0
    # Each of kvbench's requests was taken by one node (the client picks it; a node that is
    # not a primary forwards the put over the peer API, which is not counted again).
    assert {op: n for op, n in ok.items() if n} == dict(expected)
    assert sum(failed.values()) == 0
    stored = sum(
        samples[("kvstore_storage_sst_files_bytes", ())]
        + samples[("kvstore_storage_memtable_bytes", ())]
        for samples in after
    )
    assert stored > baseline_bytes
    # The Status counters are the same numbers (one source).
    assert all(samples[("kvstore_group_commit_writes_total", ())] > 0 for samples in after)

    shown = subprocess.run(
        [*KVSTORE, "top", "--once", "--interval", "0.2", "--nodes", ",".join(endpoints)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert rows[1].split()[:2] == ["node", "ops/s"]
    assert sorted(row.split()[0] for row in rows[2:]) == sorted(endpoints)


def test_json_log_lines_parse(tmp_path: Path) -> None:
    port, client_port, metrics_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    env["KVSTORE_LOG_FORMAT"] = "json"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [*KVSTORE, "serve", "--listen", f"127.0.0.1:{port}", "--log-level", "debug",
             "--client-listen", f"127.0.0.1:{client_port}", "--data-dir", str(tmp_path / "d"),
             "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            stdout=stdout, stderr=stderr, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "ready on" not in out.read_text():
            assert process.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.05)
        assert scrape(f"127.0.0.1:{metrics_port}")  # the endpoint of a lone node, too
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    lines = err.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line: one JSON object
    assert entries and all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    assert any(e["logger"] == "kvstore.node.server" and "stopping" in e["msg"] for e in entries)

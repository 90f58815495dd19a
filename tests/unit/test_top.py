"""`kvstore top`'s arithmetic: scrapes parsed, rates and quantiles from two of them, the table."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from kvstore.cli import top
from kvstore.cli.main import main
from kvstore.node.metrics import NodeMetrics


def exposition(metrics: NodeMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_parse_reads_requests_buckets_hints_and_storage() -> None:
    metrics = NodeMetrics(
        Counter(),
        lambda: {"hints_pending": 4},
        lambda: {"sst_files_bytes": 1000, "memtable_bytes": 24, "estimated_keys": 9},
    )
    metrics.record("get", None, 0.003)
    snap = top.parse(exposition(metrics))
    assert snap.requests[("get", "ok")] == 1
    assert snap.requests[("put", "timeout")] == 0
    assert snap.hints_pending == 4
    assert snap.storage_bytes == 1024
    bounds = [bound for bound, _ in snap.buckets["get"]]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf")
    assert dict(snap.buckets["get"])[0.005] == 1
    assert dict(snap.buckets["get"])[0.002] == 0


def test_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        top.parse("kvstore_requests_total{operation= 1\n")


def test_quantile_interpolates_within_a_bucket() -> None:
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.004, 100.0), (float("inf"), 100.0)]
    assert top.quantile(0.5, buckets) == pytest.approx(0.002)
    assert top.quantile(0.75, buckets) == pytest.approx(0.003)
    assert top.quantile(0.25, buckets) == pytest.approx(0.0015)
    assert top.quantile(0.5, [(0.001, 0.0), (float("inf"), 0.0)]) is None
    # Past the last finite bound only that bound is known.
    assert top.quantile(0.99, [(0.001, 1.0), (float("inf"), 10.0)]) == 0.001


def test_rates_use_the_increase_between_scrapes() -> None:
    metrics = NodeMetrics(Counter())
    for _ in range(10):
        metrics.record("get", None, 0.0008)  # bucket <= 1 ms, before the first scrape
    before = top.parse(exposition(metrics))
    for _ in range(20):
        metrics.record("get", None, 0.015)  # bucket 10..20 ms
    for _ in range(10):
        metrics.record("put", None, 0.015)
    for _ in range(2):
        metrics.record("put", TimeoutError(), 0.015)  # not a KvError: outcome "error"
    after = top.parse(exposition(metrics))
    row = top.rates("n1", before, after, seconds=2.0)
    assert row.ops["get"] == 10  # 20 in 2 s; the 10 before the first scrape do not count
    assert row.ops["put"] == 6
    assert row.ops["delete"] == 0
    assert row.total == 16
    assert row.errors == 1
    # Only the 32 new observations, all in 10..20 ms: both quantiles fall there.
    assert row.p50 is not None and 0.010 < row.p50 <= 0.020
    assert row.p99 is not None and 0.010 < row.p99 <= 0.020


def test_a_counter_that_went_down_was_reset() -> None:
    before = top.Snapshot(requests={("get", "ok"): 500.0})
    after = top.Snapshot(requests={("get", "ok"): 30.0})
    assert top.rates("n", before, after, 1.0).ops["get"] == 30


def test_render_lists_each_node_and_the_ones_down() -> None:
    row = top.Row("127.0.0.1:9101", {"get": 1500.0, "put": 500.0}, 20.0, 0.0012, 0.0099, 3, 2048)
    text = top.render(
        [row, ("127.0.0.1:9102", "connection refused")], datetime(2026, 1, 2, tzinfo=UTC)
    )
    lines = text.splitlines()
    assert lines[0] == "2026-01-02T00:00:00Z"
    assert lines[1].split() == [
        "node",
        "ops/s",
        *top.OPERATIONS,
        "err/s",
        "err%",
        "p50",
        "ms",
        "p99",
        "ms",
        "hints",
        "storage",
    ]
    cells = lines[2].split()
    assert cells[:5] == ["127.0.0.1:9101", "2000", "1500", "500", "0"]
    assert cells[-6:] == ["1.0", "1.2", "9.9", "3", "2.0", "KiB"]
    assert lines[3] == "127.0.0.1:9102  down: connection refused"


def test_run_prints_count_tables_from_fetched_scrapes() -> None:
    metrics = NodeMetrics(Counter())
    fetched: list[str] = []

    def fetch(node: str) -> str:
        fetched.append(node)
        if node == "bad:1":
            raise top.ScrapeError("refused")
        metrics.record("get", None, 0.001)
        return exposition(metrics)

    ticks = iter(range(100))
    out = io.StringIO()
    status = top.run(
        ["ok:1", "bad:1"], 1.0, 2, out, fetch, sleep=lambda _: None, clock=lambda: next(ticks)
    )
    assert status == 0
    assert fetched == ["ok:1", "bad:1"] * 3  # a first scrape, then one per table
    text = out.getvalue()
    assert text.count("bad:1  down: refused") == 2
    assert text.count("\nok:1 ") == 2


def test_run_fails_when_no_node_answers() -> None:
    def fetch(node: str) -> str:
        raise top.ScrapeError("refused")

    out = io.StringIO()
    assert top.run(["a:1"], 1.0, 1, out, fetch, sleep=lambda _: None) == 1


def test_cli_checks_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--nodes", "127.0.0.1:9", "--interval", "0", "--once"]) == 2
    assert "--interval" in capsys.readouterr().err
    assert main(["top", "--nodes", "nonsense", "--once"]) == 2

"""kvbench output formats: the JSON document, the CSV rows and the YCSB text."""

from __future__ import annotations

import csv
import io
import json

from kvstore.bench import report
from kvstore.bench.runner import PhaseResult

CONFIG = {"store": "kvstore", "workload": "a", "phase": "run", "concurrency": 4}


def sample() -> PhaseResult:
    result = PhaseResult(elapsed=2.0, completed=4)
    for op, seconds in (("read", 0.001), ("read", 0.003), ("update", 0.002), ("update", 0.004)):
        result.latencies.record(op, seconds)
    result.per_second.update({0: 3, 1: 1})
    result.errors["Unavailable"] += 2
    return result


def test_json_schema() -> None:
    document = json.loads(report.to_json(sample(), CONFIG))
    assert set(document) == {
        "config", "elapsed_s", "completed", "throughput", "operations", "errors",
        "clipped_latencies", "per_second",
    }  # fmt: skip
    assert document["config"] == CONFIG
    assert document["throughput"] == 2.0 and document["completed"] == 4
    assert document["errors"] == {"Unavailable": 2} and document["per_second"] == [3, 1]
    read = document["operations"]["read"]
    assert set(read) == {"count", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"}
    assert read["count"] == 2 and 0.99 <= read["p50_ms"] <= 1.01 and 2.99 <= read["max_ms"] <= 3.01


def test_csv_schema() -> None:
    rows = list(csv.DictReader(io.StringIO(report.to_csv(sample(), CONFIG))))
    assert [r["op"] for r in rows] == ["read", "update"]
    assert tuple(rows[0]) == report.CSV_FIELDS
    assert rows[1]["count"] == "2" and rows[1]["errors"] == "2" and rows[0]["store"] == "kvstore"
    assert float(rows[0]["throughput"]) == 2.0


def test_ycsb_text() -> None:
    text = report.ycsb_text(sample()).splitlines()
    assert text[0] == "[OVERALL], RunTime(ms), 2000"
    assert text[1] == "[OVERALL], Throughput(ops/sec), 2.0"
    assert "[READ], Operations, 2" in text and "[UPDATE], Operations, 2" in text
    assert any(line.startswith("[READ], 99thPercentileLatency(us), ") for line in text)
    assert text[-1] == "[ERRORS], Unavailable, 2"

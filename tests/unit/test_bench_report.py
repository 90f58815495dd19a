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
    result.not_found["read"] += 1  # one of the two reads found no value
    result.cpu_s.update({"client": 0.02, "node-0": 0.01})
    return result


def test_json_schema() -> None:
    document = json.loads(report.to_json([(CONFIG, sample())]))
    assert set(document) == {
        "config", "elapsed_s", "completed", "throughput", "operations", "errors",
        "clipped_latencies", "per_second", "cpu_s", "cpu_us_per_op", "latency_curve",
        "not_found",
    }  # fmt: skip
    assert document["config"] == CONFIG
    assert document["throughput"] == 2.0 and document["completed"] == 4
    assert document["errors"] == {"Unavailable": 2} and document["per_second"] == [3, 1]
    # Every operation has its count of misses, zero included; a miss is still completed.
    assert document["not_found"] == {"read": 1, "update": 0}
    read = document["operations"]["read"]
    assert set(read) == {"count", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"}
    assert read["count"] == 2 and 0.99 <= read["p50_ms"] <= 1.01 and 2.99 <= read["max_ms"] <= 3.01
    # 0.02 s of client CPU and 0.01 s of one server's over 4 operations.
    assert document["cpu_us_per_op"] == {"client": 5000.0, "node-0": 2500.0}
    curve = document["latency_curve"]["update"]
    assert curve[0][0] == 0.0 and curve[-1][0] == 100.0
    assert [ms for _, ms in curve] == sorted(ms for _, ms in curve)  # latency grows with rank
    assert 3.99 <= curve[-1][1] <= 4.01


def test_a_sweep_is_one_document_per_rate() -> None:
    runs = [({**CONFIG, "target_rate": rate}, sample()) for rate in (100.0, 200.0)]
    document = json.loads(report.to_json(runs))
    assert set(document) == {"sweep"}
    assert [step["config"]["target_rate"] for step in document["sweep"]] == [100.0, 200.0]
    table = report.sweep_table(document["sweep"]).splitlines()
    assert table[0].startswith("| store | target/s | achieved/s |") and len(table) == 4
    # store, target, achieved, both operations' p50 / p99, errors, clipped
    assert table[3] == "| kvstore | 200 | 2 | read: 1.0 / 3.0; update: 2.0 / 4.0 | 2 | 0 |"


def test_csv_schema() -> None:
    runs = [(CONFIG, sample()), ({**CONFIG, "target_rate": 50.0}, sample())]
    rows = list(csv.DictReader(io.StringIO(report.to_csv(runs))))
    assert [r["op"] for r in rows] == ["read", "update", "read", "update"]
    assert tuple(rows[0]) == report.CSV_FIELDS
    assert rows[1]["count"] == "2" and rows[1]["errors"] == "2" and rows[0]["store"] == "kvstore"
    assert [r["not_found"] for r in rows] == ["1", "0", "1", "0"]
    assert float(rows[0]["throughput"]) == 2.0
    assert rows[0]["target_rate"] == "" and rows[2]["target_rate"] == "50.0"
    assert float(rows[0]["client_cpu_us_per_op"]) == 5000.0


def test_ycsb_text() -> None:
    text = report.ycsb_text(sample()).splitlines()
    assert text[0] == "[OVERALL], RunTime(ms), 2000"
    assert text[1] == "[OVERALL], Throughput(ops/sec), 2.0"
    assert "[READ], Operations, 2" in text and "[UPDATE], Operations, 2" in text
    # YCSB's return codes: of the two reads one was OK and one found nothing.
    assert "[READ], Return=OK, 1" in text and "[READ], Return=NOT_FOUND, 1" in text
    assert "[UPDATE], Return=OK, 2" in text
    assert not any(line.startswith("[UPDATE], Return=NOT_FOUND") for line in text)
    assert any(line.startswith("[READ], 99thPercentileLatency(us), ") for line in text)
    assert "[CPU], client(us/op), 5000.0" in text and "[CPU], node-0(us/op), 2500.0" in text
    assert text[-1] == "[ERRORS], Unavailable, 2"

"""kvbench's interval reporting: .hlog files per operation read back with HdrHistogram's own
reader, and the status line printed when the output is not a terminal."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from kvstore.bench import cli
from kvstore.bench.histograms import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, LatencyRecorder
from kvstore.bench.intervals import IntervalLogs, status_line
from kvstore.bench.runner import LoadShape, PhaseResult, run_phase
from tests.unit.test_bench_cli import SlowStore, memory_store  # noqa: F401  (autouse: the "memory" store)
from tests.unit.test_bench_runner import MemoryStore, chooser


def read_log(path: Path) -> list[HdrHistogram]:
    reader = HistogramLogReader(str(path), HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))
    intervals = []
    for _ in range(10_000):  # bounded: a log of this test has a handful
        histogram = reader.get_next_interval_histogram()
        if histogram is None:
            break
        intervals.append(histogram)
    reader.close()
    return intervals


def test_intervals_are_taken_apart_from_the_totals() -> None:
    recorder = LatencyRecorder()
    recorder.record("read", 0.001)
    assert recorder.take_interval() == {}  # not tracked yet
    recorder.track_intervals()
    recorder.record("read", 0.002)
    recorder.record("update", 0.003)
    first = recorder.take_interval()
    assert {op: h.get_total_count() for op, h in first.items()} == {"read": 1, "update": 1}
    recorder.record("read", 0.004)
    second = recorder.take_interval()
    assert {op: h.get_total_count() for op, h in second.items()} == {"read": 1, "update": 0}
    assert recorder.count("read") == 3  # the totals keep everything


def test_interval_logs_read_back_with_hdrh(tmp_path: Path) -> None:
    recorder = LatencyRecorder()
    recorder.track_intervals()
    logs = IntervalLogs(tmp_path / "hlog", started=1_700_000_000.0)
    for second in range(3):
        for i in range(10 * (second + 1)):
            recorder.record("read", 0.001 * (i + 1))
        if second != 1:
            recorder.record("update", 0.5)
        logs.write(recorder.take_interval(), float(second + 1))
    logs.close()
    reads = read_log(tmp_path / "hlog" / "read.hlog")
    assert [h.get_total_count() for h in reads] == [10, 20, 30]
    assert reads[2].get_max_value() == pytest.approx(30_000, rel=0.001)  # microseconds
    updates = read_log(tmp_path / "hlog" / "update.hlog")
    assert [h.get_total_count() for h in updates] == [1, 0, 1]  # an idle interval is kept
    text = (tmp_path / "hlog" / "read.hlog").read_text()
    assert "#[StartTime: 1700000000.000" in text and "#[BaseTime: 1700000000.000" in text


def test_the_runner_reports_every_interval_and_the_last_partial_one() -> None:
    seen: list[tuple[float, int]] = []

    def on_interval(result: PhaseResult, elapsed: float) -> None:
        taken = result.latencies.take_interval()
        seen.append((elapsed, sum(int(h.get_total_count()) for h in taken.values())))

    store = MemoryStore(service_time=0.002)
    shape = LoadShape(concurrency=1, ops=60)
    result = asyncio.run(
        run_phase(store, chooser(), shape, b"v", on_interval=on_interval, interval_s=0.03)
    )
    assert len(seen) >= 2  # 60 ops of >= 2 ms each last >= 0.12 s: several intervals
    assert sum(count for _, count in seen) == result.completed == 60
    elapsed = [at for at, _ in seen]
    assert elapsed == sorted(elapsed)


def test_status_line() -> None:
    recorder = LatencyRecorder()
    recorder.track_intervals()
    for _ in range(100):
        recorder.record("read", 0.003)
    result = PhaseResult(latencies=recorder, completed=41200)
    result.errors["Timeout"] = 2
    line = status_line(
        result, 20.0, recorder.take_interval(), 0.05, datetime(2026, 12, 2, 16, 10, tzinfo=UTC)
    )
    assert line == "2026-12-02T16:10:00Z 20 s: 41200 ops, 2000 ops/s, read p99 3.0 ms, errors 2"


def test_kvbench_writes_hlogs_whose_counts_are_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["run", "--store", "memory", "--workload", "a", "--records", "100", "--ops", "40",
         "--concurrency", "2", "--status-interval", "0.1", "--hlog-dir", str(tmp_path)]
    )  # fmt: skip
    assert status == 0
    counts = {
        path.stem: sum(h.get_total_count() for h in read_log(path))
        for path in tmp_path.glob("*.hlog")
    }
    out, err = capsys.readouterr()
    reported = {
        op: int(n) for op, n in re.findall(r"^\[(READ|UPDATE)\], Operations, (\d+)$", out, re.M)
    }
    assert set(counts) == {"read", "update"}
    assert counts == {op.lower(): n for op, n in reported.items()}
    assert sum(counts.values()) == 40
    # 40 ops at 10 ms on 2 tasks take ~0.2 s: at least the last status line, and the 40.
    lines = [line for line in err.splitlines() if " ops/s, " in line]
    assert lines and ": 40 ops, " in lines[-1]


def test_hlog_needs_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--store", "memory", "--workload", "c", "--processes", "2", "--hlog-dir", "x"]
    assert cli.main(argv) == 2
    assert "--hlog-dir" in capsys.readouterr().err
    assert cli.main(["run", "--store", "memory", "--workload", "c", "--status-interval", "-1"]) == 2
    assert SlowStore.runs == 0


def test_the_first_interval_is_read_back_whatever_the_start_times_submillisecond(
    tmp_path: Path,
) -> None:
    # A start whose StartTime line rounds up (3 decimals) once put the first interval
    # before the log's start: HistogramLogReader skipped it.
    logs = IntervalLogs(tmp_path, started=1_764_000_000.0006)
    histogram = HdrHistogram(1, 60_000_000, 3)
    histogram.record_value(250)
    logs.write({"read": histogram}, 0.5)
    logs.close()
    assert sum(h.get_total_count() for h in read_log(tmp_path / "read.hlog")) == 1

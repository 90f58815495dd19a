"""What kvbench reports every interval while it runs: HdrHistogram interval logs (one .hlog
file per operation, readable by HdrHistogram's tools and `hdrh.log.HistogramLogReader`) and
a status line for runs whose output is not a terminal (YCSB's `-s`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kvstore.bench.runner import PhaseResult

if TYPE_CHECKING:
    # hdrh comes with the [bench] extra: imported where a log is written, so that
    # `kvbench --version` and the missing-extra message work without it.
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogWriter

# Latencies are recorded in microseconds: the interval's max is written in milliseconds.
_MICROS_PER_MS = 1000.0


class IntervalLogs:
    """One .hlog file per operation in `folder`, each interval's histogram appended to the
    file of its operation. Timestamps are seconds from the start of the recorded part,
    whose wall-clock time is the log's StartTime/BaseTime."""

    def __init__(self, folder: Path, started: float | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # Whole milliseconds: the log's StartTime (3 decimals) and BaseTime must name the same
        # instant, or a reader puts the first interval before the start and skips it.
        self._started = round(time.time() if started is None else started, 3)
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, HistogramLogWriter] = {}
        self._last_end = 0.0

    def path(self, op: str) -> Path:
        return self.folder / f"{op}.hlog"

    def _writer(self, op: str) -> HistogramLogWriter:
        writer = self._writers.get(op)
        if writer is None:
            if not op.replace("_", "").isalnum():
                raise ValueError(f"operation name {op!r} cannot name a file")
            out = self.path(op).open("w")
            self._files[op] = out
            from hdrh.log import HistogramLogWriter

            writer = self._writers[op] = HistogramLogWriter(out)
            stamp = datetime.fromtimestamp(self._started, UTC).isoformat()
            writer.output_comment(f"kvbench {op} latencies, in microseconds")
            # hdrh's own output_start_time fails on Python 3 (datetime.iso_format): the same
            # line, written here.
            writer.output_comment(
                f"[StartTime: {self._started:.3f} (seconds since epoch), {stamp}]"
            )
            writer.output_base_time(self._started * 1000)
            writer.output_legend()
        return writer

    def write(self, histograms: Mapping[str, HdrHistogram], end_s: float) -> None:
        """The interval from the previous write (or the start) to `end_s`, for every
        operation in `histograms` (LatencyRecorder.take_interval gives every operation seen
        so far: an idle interval is written, empty)."""
        start = self._last_end
        for op, histogram in sorted(histograms.items()):
            self._writer(op).output_interval_histogram(
                histogram,
                # hdrh takes 0 as "not given": a tiny start keeps the first interval's stamp.
                start_time_stamp_sec=start or 1e-9,
                end_time_stamp_sec=max(end_s, start + 1e-6),
                max_value_unit_ratio=_MICROS_PER_MS,
            )
            self._files[op].flush()
        self._last_end = end_s

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()
        self._writers.clear()


def status_line(
    result: PhaseResult,
    elapsed_s: float,
    interval: Mapping[str, HdrHistogram],
    interval_s: float,
    now: datetime | None = None,
) -> str:
    """`2026-12-02T16:10:00Z 20 s: 41200 ops, 2061 ops/s, get p99 3.1 ms, errors 0`: the
    operations so far, the rate and each operation's p99 over the last interval."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = sum(int(h.get_total_count()) for h in interval.values())
    rate = done / interval_s if interval_s > 0 else 0.0
    parts = [f"{stamp} {elapsed_s:.0f} s: {result.completed} ops, {rate:.0f} ops/s"]
    for op in sorted(interval):
        histogram = interval[op]
        if histogram.get_total_count():
            p99_ms = histogram.get_value_at_percentile(99.0) / _MICROS_PER_MS
            parts.append(f"{op} p99 {p99_ms:.1f} ms")
    parts.append(f"errors {sum(result.errors.values())}")
    return ", ".join(parts)

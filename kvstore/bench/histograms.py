"""Latency histograms per operation type (HDR: 1 µs to 60 s, 3 significant digits), mergeable
across client processes through their compact encoding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 95.0, 99.0, 99.9)
CURVE_PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0)


# hdrh is imported on first use (it comes with the [bench] extra): importing kvbench's
# modules needs none, so `kvbench` can say which extra is missing instead of failing.
def _new() -> HdrHistogram:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _decode(encoded: bytes) -> HdrHistogram:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram.decode(encoded)


@dataclass(frozen=True)
class Summary:
    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float


class LatencyRecorder:
    """One histogram per operation name. Latencies past the ceiling are recorded as the ceiling
    (and counted in `clipped`) rather than lost."""

    def __init__(self) -> None:
        self._histograms: dict[str, HdrHistogram] = {}
        self.clipped = 0
        # Since the last take_interval, by operation: kept only once asked for (a second
        # record per operation), for interval logs and status lines.
        self._interval: dict[str, HdrHistogram] | None = None

    def track_intervals(self) -> None:
        """From now on also keep each interval's latencies apart (see take_interval)."""
        if self._interval is None:
            self._interval = {}

    def take_interval(self) -> dict[str, HdrHistogram]:
        """The latencies recorded since the last call (or since track_intervals), by
        operation, and a fresh interval begun. Empty when intervals are not tracked."""
        taken = self._interval or {}
        if self._interval is not None:
            self._interval = {op: _new() for op in taken}
        return taken

    def record(self, op: str, seconds: float) -> None:
        micros = max(int(seconds * 1e6), LOWEST_US)
        if micros > HIGHEST_US:
            self.clipped += 1
            micros = HIGHEST_US
        histogram = self._histograms.get(op)
        if histogram is None:
            histogram = self._histograms[op] = _new()
        histogram.record_value(micros)
        if self._interval is not None:
            current = self._interval.get(op)
            if current is None:
                current = self._interval[op] = _new()
            current.record_value(micros)

    @property
    def operations(self) -> list[str]:
        return sorted(self._histograms)

    def count(self, op: str) -> int:
        histogram = self._histograms.get(op)
        return 0 if histogram is None else int(histogram.get_total_count())

    def merge(self, other: LatencyRecorder) -> None:
        for op, histogram in other._histograms.items():
            mine = self._histograms.get(op)
            if mine is None:
                mine = self._histograms[op] = _new()
            mine.add(histogram)
        self.clipped += other.clipped

    def encode(self) -> dict[str, object]:
        """A JSON-able form for sending a process's latencies to the one that merges them."""
        return {
            "clipped": self.clipped,
            "histograms": {op: h.encode().decode() for op, h in self._histograms.items()},
        }

    @classmethod
    def decode(cls, data: Mapping[str, object]) -> LatencyRecorder:
        recorder = cls()
        histograms = data.get("histograms", {})
        if not isinstance(histograms, Mapping):
            raise ValueError("histograms must be a mapping of operation to encoded histogram")
        for op, encoded in histograms.items():
            recorder._histograms[str(op)] = _decode(str(encoded).encode())
        clipped = data.get("clipped", 0)
        recorder.clipped = int(clipped) if isinstance(clipped, int | str) else 0
        return recorder

    def summary(self, op: str) -> Summary:
        histogram = self._histograms.get(op)
        if histogram is None or histogram.get_total_count() == 0:
            return Summary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p95, p99, p999 = (histogram.get_value_at_percentile(p) / 1e3 for p in PERCENTILES)
        return Summary(
            count=int(histogram.get_total_count()),
            mean_ms=histogram.get_mean_value() / 1e3,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            p999_ms=p999,
            max_ms=histogram.get_max_value() / 1e3,
        )

    def curve(self, op: str) -> list[tuple[float, float]]:
        """(percentile, latency ms) at CURVE_PERCENTILES: the shape HdrHistogram's plots show."""
        histogram = self._histograms.get(op)
        if histogram is None or histogram.get_total_count() == 0:
            return []
        return [(p, histogram.get_value_at_percentile(p) / 1e3) for p in CURVE_PERCENTILES]

    def overall_percentile(self, percentile: float) -> float:
        """One percentile over all operations together, in ms (the live progress line)."""
        combined = _new()
        for histogram in self._histograms.values():
            combined.add(histogram)
        if combined.get_total_count() == 0:
            return 0.0
        return float(combined.get_value_at_percentile(percentile)) / 1e3

"""Recent latencies of a client's calls, for its hedging delay."""

from __future__ import annotations

from array import array

# Samples kept (the most recent), and how often the percentiles are worked out again: a
# sort of 512 floats every 32 calls, not one per call.
WINDOW = 512
_RECOMPUTE_EVERY = 32


class LatencyWindow:
    __slots__ = ("_cache", "_count", "_next", "_samples")

    def __init__(self) -> None:
        self._samples = array("d")
        self._next = 0
        self._count = 0
        self._cache: dict[float, float] = {}

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, seconds: float) -> None:
        if len(self._samples) < WINDOW:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % WINDOW
        self._count += 1
        if self._count % _RECOMPUTE_EVERY == 0:
            self._cache.clear()

    @property
    def version(self) -> int:
        """Changes whenever the percentiles may have: what is derived from them can be kept
        while it stays the same."""
        return self._count // _RECOMPUTE_EVERY

    def percentile(self, q: float) -> float:
        """The q-quantile (0 < q <= 1) of the kept samples (0.0 with none)."""
        if not self._samples:
            return 0.0
        value = self._cache.get(q)
        if value is None:
            ordered = sorted(self._samples)
            value = self._cache[q] = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        return value

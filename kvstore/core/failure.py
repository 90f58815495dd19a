"""Phi-accrual failure detection (Hayashibara et al. 2004; as Akka and Cassandra).

A node does not hear a peer's heartbeat on a fixed beat: heartbeats travel by gossip, and
with gossip to one random peer a second a node learns of a peer's new heartbeat every one to
two seconds, sometimes later. A fixed timeout is either too short for that spread (false
suspicions) or too long to notice a dead peer quickly. The accrual detector instead learns
the distribution of inter-arrival times per peer and reports phi, a suspicion level on a
continuous scale: phi = -log10(P(a heartbeat arrives later than now)). A threshold of 8
means "suspect the peer when the chance that it is merely late is below 1e-8"; raising the
threshold trades detection speed for fewer false suspicions.

Time is an input: every call takes `now`, monotonic float seconds from the caller's clock,
so the node runtime and the simulator drive the same code.
"""

from __future__ import annotations

import math
from collections import deque

# Natural log of 10: phi is a base-10 logarithm, the stable softplus below is natural.
_LN10 = math.log(10.0)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_now(now: float) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, got {now!r}")


class _History:
    """A peer's last arrival and a bounded window of inter-arrival intervals.

    Mean and variance come from running sums, so each arrival costs O(1). Subtracting evicted
    samples accumulates rounding error over a long life, so the sums are recomputed exactly
    once per `window` evictions (amortised O(1) as well).
    """

    __slots__ = ("_evictions", "_sum", "_sum_sq", "intervals", "last")

    def __init__(self, window: int, last: float) -> None:
        self.intervals: deque[float] = deque(maxlen=window)
        self.last = last
        self._sum = 0.0
        self._sum_sq = 0.0
        self._evictions = 0

    def add(self, interval: float) -> None:
        intervals = self.intervals
        if len(intervals) == intervals.maxlen:
            old = intervals[0]
            self._sum -= old
            self._sum_sq -= old * old
            self._evictions += 1
        intervals.append(interval)
        self._sum += interval
        self._sum_sq += interval * interval
        if self._evictions >= len(intervals):
            self._sum = math.fsum(intervals)
            self._sum_sq = math.fsum(x * x for x in intervals)
            self._evictions = 0

    def mean_and_std(self) -> tuple[float, float]:
        n = len(self.intervals)
        mean = self._sum / n
        # Rounding can push a zero variance slightly negative.
        variance = max(self._sum_sq / n - mean * mean, 0.0)
        return mean, math.sqrt(variance)


def phi_of(elapsed: float, mean: float, std: float) -> float:
    """Phi for `elapsed` seconds of silence, given the interval mean and deviation.

    Akka's logistic approximation of the normal CDF: with y = (elapsed - mean) / std and
    z = y * (1.5976 + 0.070566 * y**2), P(later) = 1 / (1 + e**z), so phi = log10(1 + e**z).
    Akka evaluates that in two branches (on the sign of y) to keep precision; the softplus
    form below is the same function, never overflows (a huge silence gives a huge phi, or
    inf, rather than an exception) and is monotonic in `elapsed`.
    """
    y = (elapsed - mean) / std
    z = y * (1.5976 + 0.070566 * y * y)
    if z > 0:
        return (z + math.log1p(math.exp(-z))) / _LN10
    return math.log1p(math.exp(z)) / _LN10


class PhiAccrualDetector:
    """Per-peer phi-accrual failure detection; pure, the caller supplies the time.

    `threshold`: phi at or above which a peer counts as unavailable (8 ~ a 1e-8 chance that
    the peer is only late). `window`: how many recent intervals are remembered. `min_std_s`:
    floor of the deviation, so a perfectly regular history does not make a tiny delay look
    fatal. `acceptable_pause_s`: extra silence tolerated on top of the learned mean (GC
    pauses, a slow gossip round). `first_interval_s`: the interval assumed before any is
    measured; as in Akka, a new peer starts with two synthetic intervals giving that mean and
    a deviation of a quarter of it, so a peer watched but never heard from still goes down.
    """

    def __init__(
        self,
        threshold: float = 8.0,
        window: int = 100,
        min_std_s: float = 0.5,
        acceptable_pause_s: float = 0.0,
        first_interval_s: float = 1.0,
    ) -> None:
        _check_positive("threshold", threshold)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        _check_positive("min_std_s", min_std_s)
        if not (math.isfinite(acceptable_pause_s) and acceptable_pause_s >= 0):
            raise ValueError(
                f"acceptable_pause_s must be a finite number >= 0, got {acceptable_pause_s!r}"
            )
        _check_positive("first_interval_s", first_interval_s)
        self.threshold = threshold
        self.window = window
        self.min_std_s = min_std_s
        self.acceptable_pause_s = acceptable_pause_s
        self.first_interval_s = first_interval_s
        self._peers: dict[str, _History] = {}

    def watch(self, peer: str, now: float) -> None:
        """Start watching `peer` as if a heartbeat arrived at `now`; no-op if already watched."""
        _check_now(now)
        if peer in self._peers:
            return
        history = _History(self.window, now)
        spread = self.first_interval_s / 4
        history.add(self.first_interval_s - spread)
        history.add(self.first_interval_s + spread)
        self._peers[peer] = history

    def heartbeat(self, peer: str, now: float) -> None:
        """Record an arrival from `peer` at `now`, watching it first if unknown.

        An arrival not later than the last one is ignored: a clock cannot run backwards,
        and a duplicate at the same instant is the same news delivered twice, whose zero
        interval would only drag the mean down and make the detector jumpy.
        """
        _check_now(now)
        history = self._peers.get(peer)
        if history is None:
            self.watch(peer, now)
            return
        if now <= history.last:
            return
        history.add(now - history.last)
        history.last = now

    def phi(self, peer: str, now: float) -> float:
        """Suspicion level of `peer` at `now`; 0.0 for a peer not watched."""
        _check_now(now)
        history = self._peers.get(peer)
        if history is None:
            return 0.0
        mean, std = history.mean_and_std()
        elapsed = max(now - history.last, 0.0)
        return phi_of(elapsed, mean + self.acceptable_pause_s, max(std, self.min_std_s))

    def is_available(self, peer: str, now: float) -> bool:
        """phi < threshold; True for a peer not watched (nothing suggests it is down)."""
        return self.phi(peer, now) < self.threshold

    def forget(self, peer: str) -> None:
        """Stop watching `peer` (it left the cluster); no-op if not watched."""
        self._peers.pop(peer, None)

    def peers(self) -> list[str]:
        """The watched peers, sorted."""
        return sorted(self._peers)

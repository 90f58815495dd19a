"""The phi-accrual failure detector (kvstore.core.failure): behaviour over simulated time."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.core.failure import PhiAccrualDetector, phi_of


def beating(intervals: list[float], start: float = 0.0, **kwargs: float) -> PhiAccrualDetector:
    """A detector that watched "p" at `start` and then heard it after each interval."""
    detector = PhiAccrualDetector(**kwargs)  # type: ignore[arg-type]
    detector.watch("p", start)
    now = start
    for interval in intervals:
        now += interval
        detector.heartbeat("p", now)
    return detector


def last_beat(intervals: list[float], start: float = 0.0) -> float:
    return start + sum(intervals)


# ---- regular heartbeats ----


def test_regular_heartbeats_keep_a_peer_available() -> None:
    detector = PhiAccrualDetector()
    detector.watch("p", 0.0)
    for second in range(1, 61):
        detector.heartbeat("p", float(second))
        assert detector.is_available("p", float(second))
        assert detector.is_available("p", second + 0.5)


def test_phi_is_small_after_one_second_and_large_after_ten() -> None:
    intervals = [1.0] * 30
    detector = beating(intervals)
    t = last_beat(intervals)
    assert detector.phi("p", t + 1.0) < 1.0
    assert detector.is_available("p", t + 1.0)
    assert detector.phi("p", t + 10.0) > 8.0
    assert not detector.is_available("p", t + 10.0)


def test_a_heartbeat_after_silence_brings_a_peer_back() -> None:
    intervals = [1.0] * 10
    detector = beating(intervals)
    t = last_beat(intervals)
    assert not detector.is_available("p", t + 20.0)
    detector.heartbeat("p", t + 20.0)
    assert detector.is_available("p", t + 20.5)


# ---- watch ----


def test_a_watched_peer_never_heard_from_goes_down_in_bounded_time() -> None:
    detector = PhiAccrualDetector()
    detector.watch("p", 100.0)
    for tenth in range(0, 31):  # up to 3 s: only late, not dead
        assert detector.is_available("p", 100.0 + tenth / 10)
    assert detector.phi("p", 102.0) < 2.0
    assert not detector.is_available("p", 104.0)
    assert not detector.is_available("p", 160.0)


def test_watch_of_a_watched_peer_changes_nothing() -> None:
    detector = PhiAccrualDetector()
    detector.watch("p", 0.0)
    before = detector.phi("p", 3.5)
    detector.watch("p", 3.0)  # must not count as an arrival
    assert detector.phi("p", 3.5) == before


def test_heartbeat_from_an_unknown_peer_starts_watching_it() -> None:
    detector = PhiAccrualDetector()
    detector.heartbeat("p", 5.0)
    assert detector.peers() == ["p"]
    fresh = PhiAccrualDetector()
    fresh.watch("p", 5.0)
    assert detector.phi("p", 7.0) == fresh.phi("p", 7.0)


def test_unwatched_peers_are_available_with_phi_zero() -> None:
    detector = PhiAccrualDetector()
    assert detector.phi("nobody", 1e6) == 0.0
    assert detector.is_available("nobody", 1e6)
    assert detector.peers() == []


# ---- irregular arrivals (gossip) ----


def test_irregular_history_tolerates_a_three_second_gap_but_not_fifteen() -> None:
    rng = random.Random(7)
    intervals = [rng.uniform(1.0, 2.0) for _ in range(100)]
    detector = beating(intervals)
    t = last_beat(intervals)
    assert detector.is_available("p", t + 3.0)
    assert not detector.is_available("p", t + 15.0)


def test_acceptable_pause_delays_suspicion() -> None:
    intervals = [1.0] * 30
    t = last_beat(intervals)
    strict = beating(intervals)
    lenient = beating(intervals, acceptable_pause_s=5.0)
    assert not strict.is_available("p", t + 6.0)
    assert lenient.is_available("p", t + 6.0)
    assert lenient.phi("p", t + 6.0) == pytest.approx(strict.phi("p", t + 1.0))


def test_the_window_forgets_old_intervals() -> None:
    # A peer that used to be slow (10 s) and is now fast (1 s): once the window holds only
    # fast intervals, a 10 s silence is suspicious again.
    intervals = [10.0] * 20 + [1.0] * 20
    t = last_beat(intervals)
    assert beating(intervals, window=100).is_available("p", t + 10.0)
    assert not beating(intervals, window=20).is_available("p", t + 10.0)


def test_running_sums_match_a_fresh_window() -> None:
    # Thousands of evictions through the running sums give the same phi as a detector that
    # saw only the intervals still in the window.
    rng = random.Random(3)
    intervals = [rng.uniform(0.1, 5.0) for _ in range(5000)]
    long_lived = beating(intervals, window=7)
    fresh = beating(intervals[-7:], start=last_beat(intervals[:-7]), window=7)
    t = last_beat(intervals)
    for silence in (0.5, 2.0, 4.0, 8.0):
        assert long_lived.phi("p", t + silence) == pytest.approx(fresh.phi("p", t + silence))


# ---- time going backwards, huge silences ----


def test_a_heartbeat_older_than_the_last_one_is_ignored() -> None:
    intervals = [1.0] * 30
    t = last_beat(intervals)
    detector = beating(intervals)
    reference = beating(intervals)
    detector.heartbeat("p", t - 5.0)
    detector.heartbeat("p", t)  # a duplicate at the same instant is ignored too
    for silence in (0.5, 1.0, 3.0, 10.0):
        assert detector.phi("p", t + silence) == reference.phi("p", t + silence)


def test_phi_asked_before_the_last_heartbeat_is_small_not_an_error() -> None:
    detector = beating([1.0] * 10)
    assert detector.phi("p", 0.0) < 1.0


def test_huge_silence_gives_huge_phi_not_an_exception() -> None:
    detector = beating([1.0] * 10)
    for silence in (1e3, 1e9, 1e150, 1e300):
        phi = detector.phi("p", 10.0 + silence)
        assert phi > 1e3
        assert not detector.is_available("p", 10.0 + silence)
    assert phi_of(1e308, 0.0, 1e-300) == math.inf
    assert phi_of(-1e308, 0.0, 1e-300) == 0.0


def test_non_finite_time_is_rejected() -> None:
    detector = PhiAccrualDetector()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="now"):
            detector.heartbeat("p", bad)
        with pytest.raises(ValueError, match="now"):
            detector.phi("p", bad)
    assert detector.peers() == []


# ---- forget, peers ----


def test_forget() -> None:
    detector = PhiAccrualDetector()
    detector.watch("b", 0.0)
    detector.watch("a", 0.0)
    detector.heartbeat("c", 0.0)
    assert detector.peers() == ["a", "b", "c"]
    detector.forget("b")
    detector.forget("unknown")
    assert detector.peers() == ["a", "c"]
    assert detector.phi("b", 100.0) == 0.0
    assert detector.is_available("b", 100.0)
    assert not detector.is_available("a", 100.0)


# ---- constructor arguments ----


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"window": True}, "window"),
        ({"min_std_s": 0.0}, "min_std_s"),
        ({"min_std_s": math.inf}, "min_std_s"),
        ({"acceptable_pause_s": -0.1}, "acceptable_pause_s"),
        ({"acceptable_pause_s": math.nan}, "acceptable_pause_s"),
        ({"first_interval_s": 0.0}, "first_interval_s"),
        ({"first_interval_s": -1.0}, "first_interval_s"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PhiAccrualDetector(**kwargs)  # type: ignore[arg-type]


def test_window_of_one_works() -> None:
    detector = beating([1.0, 2.0, 1.0], window=1)
    assert detector.is_available("p", 4.0 + 1.0)
    assert not detector.is_available("p", 4.0 + 10.0)


# ---- properties ----

intervals_st = st.lists(st.floats(min_value=0.01, max_value=60.0), min_size=0, max_size=50)


@settings(max_examples=200, deadline=None)
@given(
    intervals=intervals_st,
    silences=st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=2, max_size=10),
    pause=st.floats(min_value=0.0, max_value=10.0),
)
def test_phi_is_monotonic_in_silence(
    intervals: list[float], silences: list[float], pause: float
) -> None:
    detector = beating(intervals, acceptable_pause_s=pause)
    t = last_beat(intervals)
    phis = [detector.phi("p", t + s) for s in sorted(silences)]
    assert all(p >= 0.0 and not math.isnan(p) for p in phis)
    assert all(a <= b for a, b in itertools.pairwise(phis))


@settings(max_examples=200, deadline=None)
@given(intervals=intervals_st)
def test_a_peer_is_available_right_after_a_heartbeat_and_down_after_long_silence(
    intervals: list[float],
) -> None:
    detector = beating(intervals)
    t = last_beat(intervals)
    assert detector.is_available("p", t)
    # Far beyond anything in the history (at most 60 s intervals, std at most ~30 s).
    assert not detector.is_available("p", t + 1000.0)

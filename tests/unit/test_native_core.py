"""kvstore._native against references: mmh3 for hashing, a small Python quorum tracker."""

from __future__ import annotations

import random
from array import array

import mmh3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore import _native


def test_hash_matches_mmh3_on_many_random_keys() -> None:
    rng = random.Random(2026)
    for length in range(0, 48):  # every tail length, several block counts
        key = rng.randbytes(length)
        assert _native.hash_key(key) == mmh3.hash64(key, seed=0, signed=False)[0], length
    for _ in range(20_000):
        key = rng.randbytes(rng.randint(0, 300))
        assert _native.hash_key(key) == mmh3.hash64(key, seed=0, signed=False)[0], key


@given(st.binary(max_size=2048))
def test_hash_matches_mmh3_property(key: bytes) -> None:
    assert _native.hash_key(key) == mmh3.hash64(key, seed=0, signed=False)[0]


def test_partition_of_takes_the_top_bits() -> None:
    assert _native.partition_of(0, 8) == 0
    assert _native.partition_of(2**64 - 1, 8) == 255
    assert _native.partition_of(1 << 56, 8) == 1
    assert _native.partition_of(2**63, 1) == 1
    for bad in (0, 33):
        with pytest.raises(ValueError):
            _native.partition_of(5, bad)


def test_preference_walk_gives_distinct_members_in_ring_order() -> None:
    owners = array("H", [0, 1, 2, 0, 1, 2, 0, 1])
    assert _native.preference_walk(owners, 0, 3) == [0, 1, 2]
    assert _native.preference_walk(owners, 7, 3) == [1, 0, 2]  # wraps around
    # Members that own no partition still come last, as fallbacks.
    assert _native.preference_walk(array("H", [1, 1, 1, 1]), 2, 3) == [1, 0, 2]
    with pytest.raises(ValueError):
        _native.preference_walk(owners, 8, 3)
    with pytest.raises(ValueError):
        _native.preference_walk(array("H", [0, 5]), 0, 3)  # owner index out of range
    with pytest.raises(ValueError):
        _native.preference_walk(array("H"), 0, 3)


class ReferenceTracker:
    """The quorum rule written plainly: each target counts once."""

    def __init__(self, targets: int, required: int) -> None:
        self.targets, self.required = targets, required
        self.answers: dict[int, bool] = {}

    def record(self, target: int, ok: bool) -> int:
        self.answers.setdefault(target, ok)
        oks = sum(self.answers.values())
        fails = len(self.answers) - oks
        if oks >= self.required:
            return _native.SUCCEEDED_STATE
        if self.targets - fails < self.required:
            return _native.FAILED_STATE
        return _native.PENDING_STATE


def test_quorum_tracker_agrees_with_the_reference() -> None:
    rng = random.Random(11)
    for _ in range(5_000):
        targets = rng.randint(1, 64)
        required = rng.randint(1, targets)
        native = _native.QuorumTracker(targets, required)
        reference = ReferenceTracker(targets, required)
        for _ in range(rng.randint(0, 2 * targets)):
            target, ok = rng.randrange(targets), rng.random() < 0.5
            expected = reference.record(target, ok)
            got = native.ok(target) if ok else native.fail(target)
            assert got == expected == native.state()
            assert native.answered(target)
        assert native.ok_count == sum(reference.answers.values())
        assert native.fail_count == len(reference.answers) - native.ok_count
        assert native.pending == targets - len(reference.answers)


def test_quorum_tracker_rejects_bad_arguments() -> None:
    for targets, required in ((0, 1), (65, 1), (3, 0), (3, 4)):
        with pytest.raises(ValueError):
            _native.QuorumTracker(targets, required)
    tracker = _native.QuorumTracker(3, 2)
    with pytest.raises(ValueError):
        tracker.ok(3)
    with pytest.raises(ValueError):
        tracker.fail(-1)

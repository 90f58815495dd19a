"""kvstore._native (the Cython hot path) against references written here in plain Python:
mmh3 for the ring hash, a list walk for the preference walk, a set-based quorum tracker."""

from __future__ import annotations

import random
from array import array

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import _native

U64 = (1 << 64) - 1


def reference_hash(key: bytes) -> int:
    return mmh3.hash64(key, seed=0, signed=False)[0]


# ---- hash_key ----


def test_hash_key_matches_mmh3_on_20000_random_keys() -> None:
    rng = random.Random(20240601)
    mismatches = []
    for _ in range(20_000):
        key = rng.randbytes(rng.randint(0, 300))
        if _native.hash_key(key) != reference_hash(key):
            mismatches.append(key)
    assert mismatches == []


@pytest.mark.parametrize("blocks", [0, 1, 2, 5])
def test_hash_key_matches_mmh3_for_every_tail_length(blocks: int) -> None:
    rng = random.Random(blocks)
    for tail in range(16):
        for _ in range(50):
            key = rng.randbytes(16 * blocks + tail)
            assert _native.hash_key(key) == reference_hash(key), (blocks, tail, key)


def test_hash_key_matches_mmh3_on_high_bytes_and_known_values() -> None:
    # Bytes >= 0x80 catch a signed-char bug in the tail handling.
    for tail in range(16):
        key = b"\xff" * (16 + tail)
        assert _native.hash_key(key) == reference_hash(key)
        key = bytes(range(0x80, 0x80 + 16 + tail))
        assert _native.hash_key(key) == reference_hash(key)
    assert _native.hash_key(b"") == reference_hash(b"") == 0
    assert _native.hash_key(b"hello") == reference_hash(b"hello") != 0


def test_hash_key_is_64_bit_unsigned_and_spread() -> None:
    values = [_native.hash_key(b"key-%d" % i) for i in range(2_000)]
    assert all(0 <= v <= U64 for v in values)
    assert len(set(values)) == len(values)
    # The top bit (used by partition_of) is set for about half of the keys.
    high = sum(v >> 63 for v in values)
    assert 850 < high < 1150


def test_hash_key_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        _native.hash_key("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _native.hash_key(None)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_hash_key_matches_mmh3_property(key: bytes) -> None:
    assert _native.hash_key(key) == reference_hash(key)


# ---- partition_of ----


@pytest.mark.parametrize("bits", [1, 2, 8, 16, 31, 32])
def test_partition_of_is_the_top_bits(bits: int) -> None:
    assert _native.partition_of(0, bits) == 0
    assert _native.partition_of(U64, bits) == (1 << bits) - 1
    assert _native.partition_of(1 << 63, bits) == 1 << (bits - 1)
    # The last position of partition p and the first of p + 1.
    width = 1 << (64 - bits)
    assert _native.partition_of(width - 1, bits) == 0
    assert _native.partition_of(width, bits) == 1
    rng = random.Random(bits)
    for _ in range(1000):
        position = rng.getrandbits(64)
        assert _native.partition_of(position, bits) == position >> (64 - bits)


@pytest.mark.parametrize("bits", [0, -1, 33, 64])
def test_partition_of_rejects_bad_bit_counts(bits: int) -> None:
    with pytest.raises(ValueError):
        _native.partition_of(12345, bits)


@pytest.mark.parametrize("position", [-1, 1 << 64])
def test_partition_of_rejects_positions_outside_uint64(position: int) -> None:
    with pytest.raises(OverflowError):
        _native.partition_of(position, 8)


# ---- preference_walk ----


def reference_walk(owners: list[int], start: int, members: int) -> list[int]:
    walk: list[int] = []
    for i in range(len(owners)):
        m = owners[(start + i) % len(owners)]
        if m not in walk:
            walk.append(m)
    return walk + [m for m in range(members) if m not in walk]


def test_preference_walk_order_on_a_small_ring() -> None:
    owners = array("H", [0, 1, 2, 0, 1, 2, 3, 3])
    assert _native.preference_walk(owners, 0, 4) == [0, 1, 2, 3]
    assert _native.preference_walk(owners, 2, 4) == [2, 0, 1, 3]
    assert _native.preference_walk(owners, 6, 4) == [3, 0, 1, 2]
    assert _native.preference_walk(owners, 7, 4) == [3, 0, 1, 2]
    assert _native.preference_walk(owners, 5, 4) == [2, 3, 0, 1]


def test_preference_walk_appends_members_owning_nothing_in_index_order() -> None:
    owners = array("H", [4, 2, 4, 2])
    assert _native.preference_walk(owners, 0, 6) == [4, 2, 0, 1, 3, 5]
    assert _native.preference_walk(owners, 1, 6) == [2, 4, 0, 1, 3, 5]
    assert _native.preference_walk(array("H", [0]), 0, 3) == [0, 1, 2]


def test_preference_walk_against_reference_on_random_rings() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        members = rng.randint(1, 12)
        q = rng.choice([1, 2, 4, 8, 16, 32, 64])
        owners = [rng.randrange(members) for _ in range(q)]
        start = rng.randrange(q)
        walk = _native.preference_walk(array("H", owners), start, members)
        assert walk == reference_walk(owners, start, members)
        assert sorted(walk) == list(range(members))  # every member exactly once
        assert walk[0] == owners[start]


def test_preference_walk_accepts_the_largest_member_index() -> None:
    owners = array("H", [65534, 0])
    walk = _native.preference_walk(owners, 0, 65535)
    assert walk[:3] == [65534, 0, 1]
    assert len(walk) == 65535
    assert len(set(walk)) == 65535


@pytest.mark.parametrize(
    ("owners", "start", "members"),
    [
        ([], 0, 1),  # empty ring
        ([0, 1], -1, 2),  # start below range
        ([0, 1], 2, 2),  # start past the end
        ([0, 1], 0, 0),  # no members
        ([0, 1], 0, -3),
        ([0, 1], 0, 65536),  # too many members
        ([0, 2], 0, 2),  # owner index >= members
        ([5, 0, 1, 1], 2, 3),  # bad owner met after wrapping
    ],
)
def test_preference_walk_rejects_bad_input(owners: list[int], start: int, members: int) -> None:
    with pytest.raises(ValueError):
        _native.preference_walk(array("H", owners), start, members)


def test_preference_walk_rejects_none() -> None:
    with pytest.raises(TypeError):
        _native.preference_walk(None, 0, 1)  # type: ignore[arg-type]


# ---- QuorumTracker ----


class ReferenceTracker:
    """What QuorumTracker must do: first answer per target counts, ok or fail."""

    def __init__(self, targets: int, required: int) -> None:
        self.targets = targets
        self.required = required
        self.oks: set[int] = set()
        self.fails: set[int] = set()

    def answer(self, target: int, ok: bool) -> int:
        if target not in self.oks and target not in self.fails:
            (self.oks if ok else self.fails).add(target)
        return self.state()

    def state(self) -> int:
        if len(self.oks) >= self.required:
            return _native.SUCCEEDED_STATE
        if self.targets - len(self.fails) < self.required:
            return _native.FAILED_STATE
        return _native.PENDING_STATE


def test_state_constants_are_distinct_ints() -> None:
    states = {_native.PENDING_STATE, _native.SUCCEEDED_STATE, _native.FAILED_STATE}
    assert len(states) == 3
    assert all(isinstance(s, int) for s in states)
    assert _native.MAX_TARGETS == 64


def test_tracker_starts_pending_with_nothing_counted() -> None:
    tracker = _native.QuorumTracker(3, 2)
    assert tracker.state() == _native.PENDING_STATE
    assert (tracker.targets, tracker.required) == (3, 2)
    assert (tracker.ok_count, tracker.fail_count, tracker.pending) == (0, 0, 3)
    assert not any(tracker.answered(t) for t in range(3))


def test_tracker_succeeds_at_required_oks_and_counts_a_target_once() -> None:
    tracker = _native.QuorumTracker(3, 2)
    assert tracker.ok(1) == _native.PENDING_STATE
    assert tracker.ok(1) == _native.PENDING_STATE  # a repeated answer does not count
    assert tracker.fail(1) == _native.PENDING_STATE  # nor does a late failure of it
    assert (tracker.ok_count, tracker.fail_count, tracker.pending) == (1, 0, 2)
    assert tracker.ok(2) == _native.SUCCEEDED_STATE
    assert tracker.fail(0) == _native.SUCCEEDED_STATE  # success is final
    assert tracker.state() == _native.SUCCEEDED_STATE


def test_tracker_fails_as_soon_as_the_quorum_is_unreachable() -> None:
    tracker = _native.QuorumTracker(5, 3)
    assert tracker.fail(0) == _native.PENDING_STATE
    assert tracker.fail(0) == _native.PENDING_STATE
    assert tracker.fail(4) == _native.PENDING_STATE  # 3 targets left, 3 required
    assert tracker.fail(2) == _native.FAILED_STATE
    assert tracker.ok(1) == _native.FAILED_STATE
    assert tracker.ok(3) == _native.FAILED_STATE  # failure is final too
    assert (tracker.ok_count, tracker.fail_count, tracker.pending) == (2, 3, 0)


def test_tracker_with_all_targets_required_fails_on_the_first_failure() -> None:
    tracker = _native.QuorumTracker(4, 4)
    assert tracker.ok(0) == _native.PENDING_STATE
    assert tracker.fail(3) == _native.FAILED_STATE


def test_tracker_handles_the_64th_target() -> None:
    tracker = _native.QuorumTracker(64, 64)
    for t in range(63):
        assert tracker.ok(t) == _native.PENDING_STATE
    assert not tracker.answered(63)
    assert tracker.ok(63) == _native.SUCCEEDED_STATE
    assert tracker.answered(63)
    assert tracker.ok_count == 64


@pytest.mark.parametrize(
    ("targets", "required"),
    [(0, 1), (-1, 1), (65, 1), (3, 0), (3, -1), (3, 4), (1, 2), (64, 65)],
)
def test_tracker_rejects_bad_sizes(targets: int, required: int) -> None:
    with pytest.raises(ValueError):
        _native.QuorumTracker(targets, required)


@pytest.mark.parametrize("target", [-1, 3, 64, 1000])
def test_tracker_rejects_targets_out_of_range_and_changes_nothing(target: int) -> None:
    tracker = _native.QuorumTracker(3, 2)
    tracker.ok(0)
    with pytest.raises(ValueError):
        tracker.ok(target)
    with pytest.raises(ValueError):
        tracker.fail(target)
    with pytest.raises(ValueError):
        tracker.answered(target)
    assert (tracker.ok_count, tracker.fail_count, tracker.pending) == (1, 0, 2)
    assert tracker.state() == _native.PENDING_STATE


def check_against_reference(targets: int, required: int, answers: list[tuple[int, bool]]) -> None:
    tracker = _native.QuorumTracker(targets, required)
    reference = ReferenceTracker(targets, required)
    for target, ok in answers:
        expected = reference.answer(target, ok)
        got = tracker.ok(target) if ok else tracker.fail(target)
        assert got == expected == tracker.state()
        assert tracker.ok_count == len(reference.oks)
        assert tracker.fail_count == len(reference.fails)
        assert tracker.pending == targets - len(reference.oks) - len(reference.fails)
        assert tracker.answered(target)
    for t in range(targets):
        assert tracker.answered(t) == (t in reference.oks or t in reference.fails)


def test_tracker_matches_reference_on_random_sequences() -> None:
    rng = random.Random(99)
    for _ in range(3_000):
        targets = rng.randint(1, 64)
        required = rng.randint(1, targets)
        # Small target pools make repeated answers from one target common.
        pool = rng.randint(1, targets)
        answers = [
            (rng.randrange(pool), rng.random() < 0.5) for _ in range(rng.randint(0, 2 * targets))
        ]
        check_against_reference(targets, required, answers)


@st.composite
def tracker_runs(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, bool]]]:
    targets = draw(st.integers(1, 64))
    required = draw(st.integers(1, targets))
    answers = draw(
        st.lists(st.tuples(st.integers(0, targets - 1), st.booleans()), max_size=3 * targets)
    )
    return targets, required, answers


@settings(max_examples=400, deadline=None)
@given(tracker_runs())
def test_tracker_matches_reference_property(run: tuple[int, int, list[tuple[int, bool]]]) -> None:
    check_against_reference(*run)

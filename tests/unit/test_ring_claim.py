"""Ring claim balance and distinctness, and preference lists."""

from __future__ import annotations

import collections

import pytest

from kvstore.core.ring import Ring, RingError, claim


def windows_with_repeats(owners: list[int], window: int) -> list[int]:
    q = len(owners)
    return [p for p in range(q) if len({owners[(p + k) % q] for k in range(window)}) < window]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_claim_is_balanced_and_n_consecutive_partitions_are_distinct(n: int) -> None:
    for members in range(1, 21):
        for partitions in (8, 16, 64, 256, 1024):
            if partitions < members:
                continue
            owners = claim(members, partitions, n)
            counts = collections.Counter(owners)
            assert set(counts) == set(range(members))
            assert max(counts.values()) - min(counts.values()) <= 1, (members, partitions)
            window = min(n, members)
            bad = windows_with_repeats(owners, window)
            most = -(-partitions // members)  # a balanced claim gives someone this many
            if window == members and partitions % members:
                # Impossible to avoid (the owners would have to repeat with period n):
                # repeats only in windows that cross the wrap-around.
                assert all(p > partitions - window for p in bad), (members, partitions, bad)
            elif partitions < window * most:
                # Someone must own two partitions closer than `window`: no claim avoids a
                # repeat (tiny rings with large n); the preference walk still skips it.
                assert bad, (members, partitions)
            else:
                assert bad == [], (members, partitions, bad)


def test_preference_list_covers_every_member_once_primaries_first() -> None:
    members = [f"10.0.0.{i}:7000" for i in range(7)]
    ring = Ring(members, 64, 3)
    for i in range(500):
        key = f"key-{i}".encode()
        entries = ring.preference_list(key)
        assert sorted(e.member for e in entries) == sorted(members)
        assert [e.primary for e in entries] == [True] * 3 + [False] * 4
        assert ring.primaries(key) == [e.member for e in entries[:3]]
        assert entries[0].member == ring.owner(ring.partition_for_key(key))


def test_ring_does_not_depend_on_member_order() -> None:
    members = ["c:1", "a:1", "e:1", "b:1", "d:1"]
    one, other = Ring(members), Ring(list(reversed(members)))
    for i in range(200):
        key = f"k{i}".encode()
        assert one.preference_list(key) == other.preference_list(key)


def test_primaries_are_distinct_even_with_n_members_and_an_uneven_ring() -> None:
    ring = Ring(["a:1", "b:1", "c:1"], 256, 3)  # 256 % 3 != 0
    for i in range(3000):
        assert len(set(ring.primaries(f"k{i}".encode()))) == 3


def test_keys_spread_evenly_over_members() -> None:
    members = [f"n{i}:1" for i in range(5)]
    ring = Ring(members, 256, 3)
    first = collections.Counter(ring.primaries(f"key-{i}".encode())[0] for i in range(30_000))
    mean = 30_000 / len(members)
    assert all(abs(c - mean) / mean < 0.2 for c in first.values()), first


@pytest.mark.parametrize(
    ("members", "partitions", "n"),
    [([], 8, 3), (["a:1", "a:1"], 8, 3), (["a:1"], 12, 3), (["a:1", "b:1", "c:1"], 2, 3),
     (["a:1"], 8, 0), (["a:1"], 1 << 17, 3)],
)  # fmt: skip
def test_bad_rings_are_refused(members: list[str], partitions: int, n: int) -> None:
    with pytest.raises(RingError):
        Ring(members, partitions, n)

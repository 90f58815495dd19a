"""kvstore.core.tombstones: a tombstone is purged only when every replica has it, after grace."""

from __future__ import annotations

from kvstore.core.tombstones import expired_tombstone, purgeable
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, merge, write


def deleted(at_ms: int = 1_000) -> tuple[KeyState, KeyState]:
    live, _ = write(EMPTY, EMPTY_CLOCK, "a/1", b"v", timestamp_ms=at_ms - 500)
    gone, _ = write(live, live.clock, "a/1", None, timestamp_ms=at_ms)
    return live, gone


def test_only_a_tombstone_past_its_grace_expires() -> None:
    live, gone = deleted(at_ms=1_000)
    assert not expired_tombstone(gone, now_ms=1_999, grace_ms=1_000)
    assert expired_tombstone(gone, now_ms=2_000, grace_ms=1_000)
    assert not expired_tombstone(live, now_ms=10**9, grace_ms=0)  # a live value
    assert not expired_tombstone(EMPTY, now_ms=10**9, grace_ms=0)  # nothing stored


def test_a_tombstone_beside_a_live_sibling_is_not_expired() -> None:
    live, gone = deleted()
    concurrent, _ = write(live, EMPTY_CLOCK, "b/1", b"other", timestamp_ms=0)
    both = merge(gone, concurrent)
    assert both.found
    assert not expired_tombstone(both, now_ms=10**9, grace_ms=0)


def test_purgeable_needs_every_replica_to_hold_the_same_tombstone() -> None:
    live, gone = deleted(at_ms=1_000)
    now, grace = 5_000, 1_000
    assert purgeable(gone, [gone, gone], now, grace)
    assert not purgeable(gone, [gone, live], now, grace)  # one still has the value
    assert not purgeable(gone, [gone, None], now, grace)  # one did not answer
    assert not purgeable(gone, [gone, gone], 1_500, grace)  # too young
    later, _ = write(gone, gone.clock, "b/1", None, timestamp_ms=900)
    assert not purgeable(gone, [later, gone], now, grace)  # a replica knows more
    assert purgeable(gone, [], now, grace)  # n = 1: the only replica

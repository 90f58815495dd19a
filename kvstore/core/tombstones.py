"""When a tombstone may be purged, sans I/O.

A delete leaves a tombstone so that replicas which missed it learn of it (anti-entropy,
read repair, handoff) instead of bringing the old value back. Purging one is safe only
when every replica holds exactly the same tombstone state (nothing older can resurface
from a replica) and it is older than the grace period (which is at least the hint age
limit, so no hint still in flight can carry an older value back).
"""

from __future__ import annotations

from collections.abc import Sequence

from kvstore.core.versions import KeyState


def expired_tombstone(state: KeyState, now_ms: int, grace_ms: int) -> bool:
    """The key is deleted (only tombstones, no live sibling) and its newest tombstone is at
    least `grace_ms` old."""
    return (
        bool(state.siblings)
        and not state.found
        and all(now_ms - s.timestamp_ms >= grace_ms for s in state.siblings)
    )


def purgeable(
    local: KeyState, replicas: Sequence[KeyState | None], now_ms: int, grace_ms: int
) -> bool:
    """The tombstone `local` may go: expired, and every other replica's state is the same
    (a replica that did not answer counts as `None`, which never agrees)."""
    return expired_tombstone(local, now_ms, grace_ms) and all(r == local for r in replicas)

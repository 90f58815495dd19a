"""What the claimant does: from the members' gossiped statuses, the next ring (pure).

One member, the claimant, changes the ring, in two steps per membership change so that data
moves before ownership does:

1. plan: the current ring stays, and a `pending` layout for the new member set is added
   (epoch + 1). Nodes keep routing by `current`; the members that will be primaries of
   partitions they do not hold yet (the receivers) pull them from the current primaries
   that are up, and then announce, through `ready_epoch`/`ready_ring`, that they hold
   everything for that exact pending ring.
2. commit: once every receiver is ready, `pending` becomes `current` (epoch + 1).

A second change waits until the first one is committed, with one exception: a pending ring
that gives partitions to a member since removed (a receiver that died mid-transfer and was
taken out with `kvstore remove`) would wait for ever, so it is replaced by one for the
members that remain. Abandoning a pending ring loses nothing: routing never left `current`,
and the extra copies pending owners received are handed back by their cleanup.

Which members should own partitions: JOINING and ACTIVE ones, and ring members whose record
says STANDBY (a member restarted with an empty data directory announces itself as standby
before it learns it is in the ring; planning it out would move all its partitions for
nothing). Everything here is a pure function of its inputs, so any node can check what the
claimant would do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kvstore.core.cluster import InvalidView, Member, MemberStatus, RingLayout, RingState
from kvstore.core.ring import Ring, RingError, reclaim

# How many epochs a ring from gossip may lead this node's by. Each membership change takes
# two (plan, commit), so this covers hundreds of changes made while a node was down; a
# ring that leads by more is not a claimant's next step but a number made up to win.
MAX_RING_LEAD = 1024

# Statuses of members that should own partitions in the next ring.
_OWNING = frozenset({MemberStatus.JOINING, MemberStatus.ACTIVE})
# Statuses of ring members that may act as claimant (they still serve their partitions).
_SERVING = frozenset({MemberStatus.ACTIVE, MemberStatus.LEAVING})


def target_members(members: Mapping[str, Member]) -> tuple[str, ...]:
    """Sorted addresses of the members that should own partitions: JOINING or ACTIVE."""
    return tuple(sorted(a for a, member in members.items() if member.status in _OWNING))


def _primary_sets(layout: RingLayout, n: int) -> list[frozenset[str]]:
    ring = Ring.from_layout(layout, n)
    return [frozenset(ring.partition_primaries(p)) for p in range(layout.partitions)]


def moved_partitions(before: RingLayout, after: RingLayout, n: int) -> int:
    """How many partitions change primary set between two layouts: each is a data transfer
    (to at least one new primary) before the change can be committed."""
    if before.partitions != after.partitions:
        raise RingError("layouts with different partition counts")
    old, new = _primary_sets(before, n), _primary_sets(after, n)
    return sum(a != b for a, b in zip(old, new, strict=True))


def receivers(state: RingState, n: int) -> dict[str, list[int]]:
    """For a pending ring: each member that will be a primary of partitions under `pending`
    but is not under `current`, and those partitions (ascending): what it must pull before
    the pending ring can be committed. Empty when nothing is pending."""
    if state.pending is None:
        return {}
    old, new = _primary_sets(state.current, n), _primary_sets(state.pending, n)
    pulls: dict[str, list[int]] = {}
    for partition, (before, after) in enumerate(zip(old, new, strict=True)):
        for member in sorted(after - before):
            pulls.setdefault(member, []).append(partition)
    return dict(sorted(pulls.items()))


def _ready(state: RingState, members: Mapping[str, Member], n: int) -> bool:
    """Whether every receiver has pulled its partitions for this very pending ring (one
    whose record is missing has not, as far as we know)."""
    return all(
        address in members and members[address].ready_for(state) for address in receivers(state, n)
    )


def _target(state: RingState, members: Mapping[str, Member]) -> tuple[str, ...]:
    """`target_members`, plus members of the current ring with no record at all (a claimant
    that has not heard of a member yet must not plan it out) or a STANDBY one (restarted
    with an empty data directory: it becomes ACTIVE as soon as it learns the ring)."""
    kept = [
        a
        for a in state.current.members
        if a not in members or members[a].status is MemberStatus.STANDBY
    ]
    return tuple(sorted({*target_members(members), *kept}))


def _removed(layout: RingLayout, members: Mapping[str, Member]) -> bool:
    return any(a in members and members[a].status is MemberStatus.LEFT for a in layout.members)


def plan(state: RingState, members: Mapping[str, Member], n: int) -> RingState | None:
    """The claimant's next step, or None when there is nothing to do (or nothing possible).

    * nothing pending and the target member set differs from the current ring's: a pending
      layout for the target (`reclaim`: few partitions move), epoch + 1;
    * pending and every receiver ready for it: commit, epoch + 1;
    * pending with a member since removed (LEFT): a new pending layout from `current` for
      the target (or none, if the target is the current ring), epoch + 1;
    * pending and not all ready: wait (None), whatever else changed meanwhile.

    A ring with no members, or with more members than partitions, cannot be built: None
    (the current ring stays; the operator sees the difference in the status).
    """
    abandon = state.pending is not None and _removed(state.pending, members)
    if state.pending is not None and not abandon:
        if not _ready(state, members, n):
            return None
        return RingState(state.epoch + 1, state.pending, None)
    target = _target(state, members)
    if not target or len(target) > state.current.partitions:
        return None
    if target == state.current.members:
        return RingState(state.epoch + 1, state.current, None) if abandon else None
    return RingState(state.epoch + 1, state.current, reclaim(state.current, target, n))


def claimant(
    members: Mapping[str, Member], ring: RingState, is_up: Callable[[str], bool]
) -> str | None:
    """The member that plans and commits rings: the lowest address among the current ring's
    members that are ACTIVE or LEAVING and up. Every node computes the same one from the same
    gossip; while views differ two may act at once, and `RingState.newer_than` settles it."""
    for address in ring.current.members:  # sorted
        member = members.get(address)
        if member is not None and member.status in _SERVING and is_up(address):
            return address
    return None


def check_successor(
    ours: RingState | None, theirs: RingState, members: Mapping[str, Member], n: int
) -> None:
    """Raise InvalidView unless `theirs`, newer than `ours`, is a ring a claimant could have
    made: both layouts routable, the pending layout exactly what `plan` makes from the
    current one (`reclaim` is deterministic), an epoch within MAX_RING_LEAD of ours, and
    every member it adds to ours known by a member record (in `members`: ours merged with the
    sender's). A larger number alone never wins. Who may send a ring at all (authenticated
    members) is the transport's check, not this one's.
    """
    try:
        Ring.from_layout(theirs.current, n)
        pending = theirs.pending
        if pending is not None and reclaim(theirs.current, pending.members, n) != pending:
            raise InvalidView("the pending layout is not the claimant's plan for its members")
    except RingError as exc:
        raise InvalidView(f"a ring no node could route by: {exc}") from None
    if ours is None:
        return  # a newcomer learns its first ring from whoever it was told to trust
    if theirs.epoch - ours.epoch > MAX_RING_LEAD:
        raise InvalidView(
            f"ring epoch {theirs.epoch} leads this node's {ours.epoch} by more than {MAX_RING_LEAD}"
        )
    known = set(ours.current.members)
    if ours.pending is not None:
        known.update(ours.pending.members)
    added = set(theirs.current.members)
    if theirs.pending is not None:
        added.update(theirs.pending.members)
    for address in sorted(added - known):
        if address not in members:
            raise InvalidView(f"the ring gives partitions to {address}, which is not a member")

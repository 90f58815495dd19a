"""The claimant's steps: plan a pending ring, wait for receivers, commit; and who claims."""

from __future__ import annotations

from kvstore.core.cluster import Member, MemberStatus, RingLayout, RingState
from kvstore.core.ring import initial_layout
from kvstore.core.ringplan import (
    claimant,
    moved_partitions,
    plan,
    receivers,
    target_members,
)

A, B, C, D = "10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101", "10.0.0.4:7101"
N = 3


def member(address: str, status: MemberStatus, ready_for: RingState | None = None) -> Member:
    if ready_for is None:
        return Member(address, f"id-{address}", status, 1, 1)
    return Member(address, f"id-{address}", status, 1, 1, ready_for.epoch, ready_for.digest())


def cluster(**statuses: MemberStatus) -> dict[str, Member]:
    by_letter = {"a": A, "b": B, "c": C, "d": D}
    return {by_letter[k]: member(by_letter[k], s) for k, s in statuses.items()}


def ready(members: dict[str, Member], state: RingState, *addresses: str) -> dict[str, Member]:
    """`members` with `addresses` announcing they pulled everything for pending ring `state`."""
    out = dict(members)
    for a in addresses:
        out[a] = member(a, out[a].status, state)
    return out


ACTIVE, JOINING, LEAVING = MemberStatus.ACTIVE, MemberStatus.JOINING, MemberStatus.LEAVING
STANDBY, LEFT = MemberStatus.STANDBY, MemberStatus.LEFT


def test_target_members_are_joining_or_active_sorted() -> None:
    members = cluster(d=JOINING, a=ACTIVE, b=LEAVING, c=STANDBY)
    assert target_members(members) == (A, D)
    assert target_members(cluster(a=LEFT)) == ()


def test_stable_cluster_plans_nothing() -> None:
    state = RingState(1, initial_layout([A, B, C], 64, N))
    assert plan(state, cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE), N) is None
    # A standby member is not asked to join: still nothing to do.
    assert plan(state, cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=STANDBY), N) is None


def test_join_flow() -> None:
    state = RingState(1, initial_layout([A, B, C], 64, N))
    members = cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=JOINING)
    pending = plan(state, members, N)
    assert pending is not None
    assert pending.epoch == 2 and pending.current == state.current
    assert pending.pending is not None and pending.pending.members == (A, B, C, D)
    pulls = receivers(pending, N)
    assert D in pulls
    # Nobody ready: wait. The joiner alone ready is not enough if others receive too.
    assert plan(pending, members, N) is None
    assert plan(pending, ready(members, state, *pulls), N) is None  # an older ring
    partly = ready(members, pending, *sorted(pulls)[:-1])
    assert plan(pending, partly, N) is None
    committed = plan(pending, ready(members, pending, *pulls), N)
    assert committed == RingState(3, pending.pending, None)
    # Then stable.
    assert plan(committed, ready(members, pending, *pulls), N) is None


def test_ready_for_another_pending_ring_of_the_same_epoch_is_not_ready() -> None:
    # Two claimants (views apart) planned different pending rings at one epoch: receivers
    # that pulled for one must not let the other be committed.
    state = RingState(1, initial_layout([A, B, C], 64, N))
    ours = plan(state, cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=JOINING), N)
    assert ours is not None and ours.pending is not None
    other_layout = initial_layout([A, B, C, D], 64, N)
    assert other_layout != ours.pending
    other = RingState(ours.epoch, state.current, other_layout)
    members = cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=JOINING)
    everyone = sorted({*receivers(ours, N), *receivers(other, N)})
    assert plan(ours, ready(members, other, *everyone), N) is None
    assert plan(ours, ready(members, ours, *everyone), N) == RingState(3, ours.pending)


def test_receiver_missing_from_members_is_not_ready() -> None:
    state = RingState(1, initial_layout([A, B, C], 64, N))
    members = cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=JOINING)
    pending = plan(state, members, N)
    assert pending is not None
    everyone = ready(members, pending, *receivers(pending, N))
    del everyone[D]
    assert plan(pending, everyone, N) is None


def test_second_join_waits_for_the_first_commit() -> None:
    state = RingState(1, initial_layout([A, B], 64, N))
    pending = plan(state, cluster(a=ACTIVE, b=ACTIVE, c=JOINING), N)
    assert pending is not None
    assert plan(pending, cluster(a=ACTIVE, b=ACTIVE, c=JOINING, d=JOINING), N) is None


def test_leave_flow() -> None:
    state = RingState(5, initial_layout([A, B, C, D], 64, N))
    members = cluster(a=ACTIVE, b=LEAVING, c=ACTIVE, d=ACTIVE)
    pending = plan(state, members, N)
    assert pending is not None and pending.pending is not None
    assert pending.pending.members == (A, C, D)
    pulls = receivers(pending, N)
    assert B not in pulls and pulls
    committed = plan(pending, ready(members, pending, *pulls), N)
    assert committed is not None and committed.epoch == 7
    assert committed.current.members == (A, C, D) and committed.pending is None


def test_leave_with_no_receivers_commits_at_once() -> None:
    # Two members, n = 3: both are primaries of everything; without B, A still is.
    state = RingState(1, initial_layout([A, B], 8, N))
    pending = plan(state, cluster(a=ACTIVE, b=LEAVING), N)
    assert pending is not None
    assert receivers(pending, N) == {}
    assert plan(pending, cluster(a=ACTIVE, b=LEAVING), N) == RingState(3, pending.pending)


def test_never_plans_an_empty_ring() -> None:
    state = RingState(1, initial_layout([A], 8, N))
    assert plan(state, cluster(a=LEAVING), N) is None
    too_many = {f"h{i}:1": member(f"h{i}:1", JOINING) for i in range(9)}
    assert plan(state, {**too_many, A: member(A, ACTIVE)}, N) is None


def test_unknown_ring_member_is_not_planned_out() -> None:
    state = RingState(1, initial_layout([A, B, C], 64, N))
    assert plan(state, cluster(a=ACTIVE, b=ACTIVE), N) is None


def test_ring_member_announcing_standby_is_not_planned_out() -> None:
    # Restarted with a wiped data directory, C says STANDBY until it learns the ring.
    state = RingState(1, initial_layout([A, B, C], 64, N))
    assert plan(state, cluster(a=ACTIVE, b=ACTIVE, c=STANDBY), N) is None
    # Alongside a real change, it stays in the target.
    pending = plan(state, cluster(a=ACTIVE, b=ACTIVE, c=STANDBY, d=JOINING), N)
    assert pending is not None and pending.pending is not None
    assert pending.pending.members == (A, B, C, D)


def test_pending_ring_with_a_removed_receiver_is_replaced() -> None:
    # D joined, died while pulling, and was removed: the pending ring would wait for ever.
    state = RingState(1, initial_layout([A, B, C], 64, N))
    pending = plan(state, cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=JOINING), N)
    assert pending is not None
    removed = cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=LEFT)
    assert plan(pending, removed, N) == RingState(3, state.current, None)
    # A ring member removed mid-change: a new pending ring without it, from `current`.
    members = cluster(a=ACTIVE, b=ACTIVE, c=LEFT, d=JOINING)
    replaced = plan(pending, members, N)
    assert replaced is not None and replaced.epoch == 3
    assert replaced.current == state.current
    assert replaced.pending is not None and replaced.pending.members == (A, B, D)


def test_pending_ring_waits_for_a_receiver_that_is_only_down() -> None:
    # Down is not removed: an operator decides that (`kvstore remove`).
    state = RingState(1, initial_layout([A, B, C], 64, N))
    members = cluster(a=ACTIVE, b=ACTIVE, c=ACTIVE, d=JOINING)
    pending = plan(state, members, N)
    assert pending is not None
    assert plan(pending, members, N) is None


def test_receivers_on_a_small_hand_checked_case() -> None:
    # n = 1: the primary of a partition is its owner. 4 partitions, owners A B A B -> A B C B.
    current = RingLayout((A, B), (0, 1, 0, 1))
    pending = RingLayout((A, B, C), (0, 1, 2, 1))
    state = RingState(2, current, pending)
    assert receivers(state, 1) == {C: [2]}
    assert moved_partitions(current, pending, 1) == 1
    # n = 2: primaries walk on. Before: every partition {A, B}. After: p0 {A,B}, p1 {B,C},
    # p2 {C,B}, p3 {B,A}: C pulls 1 and 2.
    assert receivers(state, 2) == {C: [1, 2]}
    assert moved_partitions(current, pending, 2) == 2
    assert receivers(RingState(2, current), 2) == {}


def test_claimant_is_the_lowest_serving_member_that_is_up() -> None:
    ring = RingState(1, initial_layout([A, B, C], 64, N))
    members = cluster(a=ACTIVE, b=LEAVING, c=ACTIVE, d=JOINING)
    assert claimant(members, ring, lambda a: True) == A
    assert claimant(members, ring, lambda a: a != A) == B  # leaving still serves
    assert claimant(members, ring, lambda a: a not in (A, B)) == C
    # D is not in the current ring: never the claimant.
    assert claimant(members, ring, lambda a: a == D) is None
    standby_a = {**members, A: member(A, STANDBY)}
    assert claimant(standby_a, ring, lambda a: True) == B

"""Gossip is network input: a view out of bounds, or a ring no claimant made, is refused whole
and changes nothing (kvstore.core.cluster.check_view, kvstore.core.ringplan.check_successor)."""

from __future__ import annotations

import dataclasses

import pytest

from kvstore.core import ringplan
from kvstore.core.cluster import (
    MAX_COUNTER,
    MAX_MEMBER_RECORDS,
    ClusterView,
    InvalidView,
    Member,
    MemberStatus,
    RingLayout,
    RingState,
)
from kvstore.core.failure import PhiAccrualDetector
from kvstore.core.membership import Membership
from kvstore.core.ring import initial_layout, reclaim

A, B, C, D = "10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101", "10.0.0.4:7101"
EVIL = "10.6.6.6:7101"
SEEDS = (A, B, C)
PARTITIONS, N = 64, 3


def node(address: str = A) -> Membership:
    return Membership(
        address,
        f"id-{address}",
        1,
        PARTITIONS,
        N,
        SEEDS,
        PhiAccrualDetector(threshold=8.0),
        0.0,
        bootstrap=True,
    )


def snapshot(m: Membership) -> tuple[object, ...]:
    return (m.ring, dict(m.members), m.revision)


def forged(m: Membership, **changes: object) -> ClusterView:
    view = m.view()
    return dataclasses.replace(view, **changes)  # type: ignore[arg-type]


def member(address: str, status: MemberStatus = MemberStatus.ACTIVE, **kw: int) -> Member:
    return Member(address, "x", status, kw.get("incarnation", 5), kw.get("version", 5))


def refused(m: Membership, view: ClusterView, match: str) -> None:
    before = snapshot(m)
    with pytest.raises(InvalidView, match=match):
        m.on_gossip(view, 1.0)
    assert snapshot(m) == before


def test_a_huge_epoch_giving_every_partition_to_a_stranger_is_refused() -> None:
    m = node()
    takeover = RingState(2**62 - 1, initial_layout([EVIL], PARTITIONS, N))
    members = {**m.members, EVIL: member(EVIL)}
    refused(m, forged(m, ring=takeover, members=members), "leads this node's")


def test_a_next_epoch_naming_a_stranger_without_a_record_is_refused() -> None:
    m = node()
    assert m.ring is not None
    takeover = RingState(m.ring.epoch + 1, initial_layout([EVIL], PARTITIONS, N))
    refused(m, forged(m, ring=takeover), "not a member")


def test_a_pending_layout_that_is_not_the_claimants_plan_is_refused() -> None:
    m = node()
    assert m.ring is not None
    current = m.ring.current
    # Every partition to D: not what reclaim makes for the members {A, B, C, D}.
    members = (*current.members, D)
    bogus = RingLayout(tuple(sorted(members)), tuple(3 for _ in range(PARTITIONS)))
    view = forged(
        m,
        ring=RingState(m.ring.epoch + 1, current, bogus),
        members={**m.members, D: member(D, MemberStatus.JOINING)},
    )
    refused(m, view, "not the claimant's plan")


def test_the_claimants_real_plan_is_taken() -> None:
    m = node()
    assert m.ring is not None
    members = (*m.ring.current.members, D)
    plan = RingState(m.ring.epoch + 1, m.ring.current, reclaim(m.ring.current, members, N))
    view = forged(m, ring=plan, members={**m.members, D: member(D, MemberStatus.JOINING)})
    assert m.on_gossip(view, 1.0)
    assert m.ring == plan
    assert ringplan.MAX_RING_LEAD >= 2


def test_a_flood_of_members_is_refused_whole() -> None:
    m = node()
    flood = {
        f"10.9.{i // 250}.{i % 250}:7101": member(f"10.9.{i // 250}.{i % 250}:7101")
        for i in range(MAX_MEMBER_RECORDS + 1)
    }
    refused(m, forged(m, members={**m.members, **flood}), "member records")


def test_members_past_the_bound_are_not_taken_but_known_ones_still_update() -> None:
    m = node()
    batch = MAX_MEMBER_RECORDS // 2
    first = {
        f"10.8.{i // 250}.{i % 250}:7101": member(f"10.8.{i // 250}.{i % 250}:7101")
        for i in range(batch)
    }
    m.on_gossip(forged(m, members={**m.members, **first, B: member(B, version=5)}), 1.0)
    second = {
        f"10.7.{i // 250}.{i % 250}:7101": member(f"10.7.{i // 250}.{i % 250}:7101")
        for i in range(batch)
    }
    heartbeat = member(B, version=9)
    m.on_gossip(forged(m, members={**second, B: heartbeat}), 2.0)
    assert len(m.members) == MAX_MEMBER_RECORDS
    assert m.members[B].version == 9  # a member already known still updates


def test_a_forged_counter_is_dropped_alone_and_cannot_poison_a_member() -> None:
    """A relayed record of B with its version near the bound would make B answer with a
    record past it, refused by everyone: B cut off for good. It is dropped instead."""
    m = node()
    m.on_gossip(forged(m, members={**m.members, B: member(B, version=5)}), 1.0)
    poison = member(B, version=MAX_COUNTER - 1)
    about_me = dataclasses.replace(m.me, version=MAX_COUNTER - 1)
    fresh = member(D, MemberStatus.STANDBY)
    m.on_gossip(forged(m, members={B: poison, A: about_me, D: fresh}), 2.0)
    assert m.members[B].version == 5
    assert m.me.version < 1 << 32
    assert D in m.members  # the rest of the view merged


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (member(B, version=2**64 - 1), "version"),
        (member(B, incarnation=MAX_COUNTER), "incarnation"),
        (Member(B, "x", MemberStatus.ACTIVE, 1, 1, ready_epoch=2**63), "ready_epoch"),
        (Member(B, "x", MemberStatus.ACTIVE, 1, 1, ready_ring=b"\x00" * 1000), "ready_ring"),
        (Member(B, "bad id with spaces", MemberStatus.ACTIVE, 1, 1), "node_id"),
        (member("not-an-address"), "not a member address"),
        (member("host:99999"), "not a member address"),
        (member("x" * 300 + ":7101"), "not a member address"),
    ],
    ids=[
        "version",
        "incarnation",
        "ready_epoch",
        "ready_ring",
        "node_id",
        "address",
        "port",
        "long",
    ],
)
def test_a_malformed_member_record_is_refused(record: Member, match: str) -> None:
    m = node()
    members = {**m.members, record.address: record}
    refused(m, forged(m, members=members), match)


def test_a_member_record_filed_under_another_address_is_refused() -> None:
    m = node()
    refused(m, forged(m, members={**m.members, B: member(C)}), "another address")


def test_a_removal_on_the_largest_accepted_version_does_not_overflow() -> None:
    m = node()
    m.on_gossip(forged(m, members={**m.members, D: member(D, version=MAX_COUNTER - 1)}), 1.0)
    m.remove(D)
    assert m.members[D].status is MemberStatus.LEFT
    assert m.members[D].version < 2**64


def test_contacts_leave_out_departed_members() -> None:
    m = node()
    m.on_gossip(forged(m, members={**m.members, D: member(D, MemberStatus.LEFT)}), 1.0)
    assert D not in m.contacts()
    assert {B, C} <= m.contacts()

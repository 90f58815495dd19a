"""One node's view of the cluster and its gossip, sans I/O.

Every `gossip_interval` the runtime calls `tick`, which bumps this node's heartbeat, lets the
claimant plan the ring, and names a random peer; the runtime sends that peer `view()` and
hands the reply to `on_gossip` (push-pull, as Cassandra and Riak do). Receiving a newer
record of a member counts as a heartbeat from it for the failure detector, so a node learns
of peers it never talks to directly.

Bootstrap: a node listed in its own seeds starts ACTIVE with the ring every seed computes
alike from the seed list (epoch 1); a node that is not starts STANDBY with no ring and learns
it by gossip; `kvstore join` makes it JOINING, and the claimant gives it partitions. A
restarted node starts from the state it saved (`ClusterView`), under a new incarnation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

from kvstore.core import ringplan
from kvstore.core.cluster import (
    MAX_MEMBER_RECORDS,
    ClusterView,
    Member,
    MemberStatus,
    RingState,
    check_view,
)
from kvstore.core.failure import PhiAccrualDetector
from kvstore.core.ring import initial_layout

log = logging.getLogger(__name__)


# How far a removal record's version leads the removed member's last known one: more than
# the heartbeats (one per gossip round) any peer can have heard that this node has not.
REMOVAL_VERSION_LEAD = 1 << 20


class ClusterMismatch(ValueError):
    """A peer's cluster has another partition count or replication factor: the two would
    place keys differently, so their states are not merged."""


class Membership:
    def __init__(
        self,
        address: str,
        node_id: str,
        incarnation: int,
        partitions: int,
        n: int,
        seeds: Sequence[str],
        detector: PhiAccrualDetector,
        now: float,
        saved: ClusterView | None = None,
        bootstrap: bool = False,
        client_address: str = "",
    ) -> None:
        self.address = address
        self.partitions = partitions
        self.n = n
        self.seeds = tuple(s for s in seeds if s != address)
        self.detector = detector
        # Bumped whenever something worth keeping across a restart changes (not heartbeats).
        self.revision = 0
        self.members: dict[str, Member] = {}
        self.ring: RingState | None = None
        status = MemberStatus.STANDBY
        if saved is not None:
            self._check(saved)
            self.members = dict(saved.members)
            self.ring = saved.ring
            mine = saved.members.get(address)
            if mine is not None:
                status = mine.status
        elif bootstrap:
            members = tuple(sorted(set(seeds) | {address}))
            self.ring = RingState(1, initial_layout(members, partitions, n))
            status = MemberStatus.ACTIVE
        self.members[address] = Member(
            address, node_id, status, incarnation, 1, client_address=client_address
        )
        for peer in self._peers():
            detector.watch(peer, now)
        self._follow_ring()

    # ---- what others are told ----

    @property
    def me(self) -> Member:
        return self.members[self.address]

    def view(self) -> ClusterView:
        return ClusterView(dict(self.members), self.ring, self.partitions, self.n)

    # ---- time ----

    def tick(self, now: float, rng: random.Random) -> str | None:
        """One gossip round: heartbeat, the claimant's planning, and the peer to gossip with
        (a seed while no other member is known)."""
        self._set_me(version=self.me.version + 1, persist=False)
        self._plan(now)
        peers = [p for p in self._peers() if not self._left(p)]
        candidates = peers or [s for s in self.seeds if s not in self.members]
        if not candidates:
            return None
        # Mostly a peer believed up; now and then any, so a recovered peer is heard of again.
        up = [p for p in candidates if self.is_up(p, now)]
        return rng.choice(up if up and rng.random() < 0.8 else candidates)

    # ---- events ----

    def on_gossip(self, view: ClusterView, now: float) -> bool:
        """Merge a peer's view; True when the ring changed. Raises, having merged nothing,
        ClusterMismatch for a peer whose cluster cannot be this one's and InvalidView for a
        view out of bounds or a ring no claimant made (`ringplan.check_successor`)."""
        self._check(view)
        check_view(view)
        newer: dict[str, Member] = {}
        implausible = crowded = 0
        for address, theirs in view.members.items():
            ours = self.members.get(address)
            if ours is not None and theirs.age <= ours.age:
                continue
            if not _plausible(theirs, ours):
                # A counter made up to win (or to push a member's own record out of range
                # when it answers): this record is dropped, the rest of the view merges.
                implausible += 1
                continue
            if ours is None and len(self.members) + len(newer) >= MAX_MEMBER_RECORDS:
                crowded += 1  # the table is full: known members still update
                continue
            newer[address] = theirs
        if implausible or crowded:
            log.warning(
                "gossip: dropped %d records with implausible counters and %d new members past"
                " the %d this node tracks",
                implausible,
                crowded,
                MAX_MEMBER_RECORDS,
            )
        if (
            view.ring is not None
            and self.ring is not None
            and view.ring.epoch == self.ring.epoch == 1
            and view.ring.digest() != self.ring.digest()
        ):
            # Two first rings differ: the nodes were started with different seed lists. No
            # claimant made either, so neither may win; an operator has to fix the seeds.
            raise ClusterMismatch(
                f"peer has members={','.join(view.ring.current.members)}, this node"
                f" {','.join(self.ring.current.members)}: the nodes place keys differently;"
                " give every node of a new cluster the same --seeds"
            )
        changed = False
        if view.ring is not None and (self.ring is None or view.ring.newer_than(self.ring)):
            known = {**self.members, **newer}
            known.pop(self.address, None)
            known[self.address] = self.me
            ringplan.check_successor(self.ring, view.ring, known, self.n)
            changed = True
            # The ring first: whether a member's record may bring it back depends on it.
            self.ring = view.ring
            self.revision += 1
        for address, theirs in newer.items():
            if address == self.address:
                self._hear_of_me(theirs)
                continue
            ours = self.members.get(address)
            if ours is None or theirs.age > ours.age:
                if ours is None or (ours.status, ours.ready_epoch, ours.ready_ring) != (
                    theirs.status,
                    theirs.ready_epoch,
                    theirs.ready_ring,
                ):
                    self.revision += 1
                self.members[address] = theirs
                if theirs.status is not MemberStatus.LEFT:
                    # A LEFT record may be a removal another member wrote: no sign of life.
                    self.detector.heartbeat(address, now)
        if changed:
            for peer in self._peers():
                self.detector.watch(peer, now)
        self._follow_ring()
        return changed

    def set_status(self, status: MemberStatus) -> None:
        if status is not self.me.status:
            self._set_me(status=status)

    def mark_ready(self, state: RingState) -> None:
        """This node has pulled every partition it receives in the pending ring `state`."""
        if not self.me.ready_for(state):
            self._set_me(ready_epoch=state.epoch, ready_ring=state.digest())

    def remove(self, address: str) -> None:
        """Write a dead member's record as LEFT (`kvstore remove`): the claimant plans it out
        of the ring, and its partitions are rebuilt from the replicas that are up. The caller
        checks it is dead; should it be alive after all, it hears of the removal and hands
        its data off as a leaving member does."""
        if address == self.address:
            raise ValueError("a member cannot remove itself; it leaves")
        ours = self.members.get(address)
        if ours is not None and ours.status is MemberStatus.LEFT:
            return
        self.members[address] = Member(
            address,
            ours.node_id if ours else "",
            MemberStatus.LEFT,
            ours.incarnation if ours else 0,
            # Peers may hold a few heartbeats more of it than this node: the removal must
            # be newer than all of them, or the first exchange would undo it.
            (ours.version if ours else 0) + REMOVAL_VERSION_LEAD,
            client_address=ours.client_address if ours else "",
        )
        self.revision += 1

    @property
    def out_of_ring(self) -> bool:
        """Whether this node owns nothing in the ring and no change is pending: what a
        leaving node waits for before it hands off the rest and turns LEFT."""
        ring = self.ring
        return (
            ring is not None and ring.pending is None and self.address not in ring.current.members
        )

    def finish_leaving(self) -> None:
        """The runtime saw this leaving node hold no data and no hints any more."""
        if self.me.status is MemberStatus.LEAVING and self.out_of_ring:
            self.set_status(MemberStatus.LEFT)

    # ---- questions ----

    def is_removed(self, address: str) -> bool:
        """Whether the member left or was removed (and is not in the ring any more)."""
        ring = self.ring
        in_ring = ring is not None and (
            address in ring.current.members
            or (ring.pending is not None and address in ring.pending.members)
        )
        return self._left(address) and not in_ring

    def contacts(self) -> set[str]:
        """The peers this node may talk to: members not LEFT, everyone in the ring (a removed
        member until the ring drops it), the seeds."""
        kept = {a for a, m in self.members.items() if m.status is not MemberStatus.LEFT}
        if self.ring is not None:
            kept.update(self.ring.current.members)
            kept.update(self.ring.pending.members if self.ring.pending else ())
        kept.update(self.seeds)
        kept.discard(self.address)
        return kept

    def is_up(self, address: str, now: float) -> bool:
        return address == self.address or self.detector.is_available(address, now)

    def up_checker(self, now: float) -> Callable[[str], bool]:
        return lambda address: self.is_up(address, now)

    # ---- internals ----

    def _left(self, address: str) -> bool:
        member = self.members.get(address)
        return member is not None and member.status is MemberStatus.LEFT

    def _peers(self) -> list[str]:
        known = set(self.members)
        if self.ring is not None:
            known.update(self.ring.current.members)
            if self.ring.pending is not None:
                known.update(self.ring.pending.members)
        known.discard(self.address)
        return sorted(known)

    def _check(self, view: ClusterView) -> None:
        if (view.partitions, view.n) != (self.partitions, self.n):
            raise ClusterMismatch(
                f"peer has partitions={view.partitions} n={view.n}, this node"
                f" partitions={self.partitions} n={self.n}: give every node the same"
                " --partitions and --n"
            )

    def _set_me(
        self,
        *,
        status: MemberStatus | None = None,
        incarnation: int | None = None,
        version: int | None = None,
        ready_epoch: int | None = None,
        ready_ring: bytes | None = None,
        persist: bool = True,
    ) -> None:
        me = self.me
        self.members[self.address] = Member(
            me.address,
            me.node_id,
            status or me.status,
            incarnation if incarnation is not None else me.incarnation,
            version if version is not None else me.version + 1,
            ready_epoch if ready_epoch is not None else me.ready_epoch,
            ready_ring if ready_ring is not None else me.ready_ring,
            me.client_address,
        )
        if persist:
            self.revision += 1

    def _plan(self, now: float) -> None:
        if self.ring is None:
            return
        if ringplan.claimant(self.members, self.ring, self.up_checker(now)) != self.address:
            return
        planned = ringplan.plan(self.ring, self.members, self.n)
        if planned is not None:
            self.ring = planned
            self.revision += 1
            self._follow_ring()

    def _follow_ring(self) -> None:
        """Move this node's own status along with the ring it now knows. (LEAVING turns
        LEFT in `finish_leaving`, once the runtime has handed everything off.)"""
        if self.ring is None:
            return
        status = self.me.status
        owns = self.address in self.ring.current.members
        if owns and status in (MemberStatus.STANDBY, MemberStatus.JOINING):
            # Joined (or restarted after losing its saved state while owning partitions).
            self.set_status(MemberStatus.ACTIVE)

    def _hear_of_me(self, theirs: Member) -> None:
        if theirs.age <= self.me.age:
            return
        if theirs.status is MemberStatus.LEFT and self.me.status in _IN_RING:
            # An operator removed this node while others held it down.
            log.warning("this node was removed from the cluster; handing its data off")
            self._set_me(
                status=MemberStatus.LEAVING,
                incarnation=theirs.incarnation,
                version=theirs.version + 1,
            )
            return
        # Someone holds a newer record of us (from before a restart with a clock that went
        # back): outdo it, or our news would never win at peers.
        self._set_me(incarnation=theirs.incarnation, version=theirs.version + 1, persist=False)


# How far a record of a member may lead the one this node holds (same incarnation): more
# than any honest gap (heartbeats at 5 a second for years, a removal's lead), far less than
# the room left below check_view's bound, so no forged record can push a member's counters
# (and its answer to them) out of range. A record of a member not known yet, or of a new
# incarnation, starts low: versions count heartbeats, incarnations wall milliseconds.
MAX_VERSION_LEAD = 1 << 30
_MAX_FIRST_VERSION = 1 << 40
_MAX_INCARNATION = 1 << 50


def _plausible(theirs: Member, ours: Member | None) -> bool:
    if theirs.incarnation > _MAX_INCARNATION:
        return False
    if ours is not None and theirs.incarnation == ours.incarnation:
        return theirs.version - ours.version <= MAX_VERSION_LEAD
    return theirs.version <= _MAX_FIRST_VERSION


# Statuses of a member that is, or is about to be, in the ring.
_IN_RING = frozenset({MemberStatus.JOINING, MemberStatus.ACTIVE, MemberStatus.LEAVING})

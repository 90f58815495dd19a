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

import random
from collections.abc import Callable, Sequence

from kvstore.core import ringplan
from kvstore.core.cluster import ClusterView, Member, MemberStatus, RingState
from kvstore.core.failure import PhiAccrualDetector
from kvstore.core.ring import initial_layout


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
        self.members[address] = Member(address, node_id, status, incarnation, 1)
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
        """Merge a peer's view; True when the ring changed. Raises ClusterMismatch, having
        merged nothing, for a peer whose cluster cannot be this one's."""
        self._check(view)
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
        for address, theirs in view.members.items():
            if address == self.address:
                if theirs.age > self.me.age:
                    # Someone holds a newer record of us (from before a restart with a clock
                    # that went back): outdo it, or our news would never win at peers.
                    self._set_me(
                        incarnation=theirs.incarnation, version=theirs.version + 1, persist=False
                    )
                continue
            ours = self.members.get(address)
            if ours is None or theirs.age > ours.age:
                if ours is None or (ours.status, ours.ready_epoch) != (
                    theirs.status,
                    theirs.ready_epoch,
                ):
                    self.revision += 1
                self.members[address] = theirs
                self.detector.heartbeat(address, now)
        changed = view.ring is not None and (self.ring is None or view.ring.newer_than(self.ring))
        if changed:
            self.ring = view.ring
            self.revision += 1
            for peer in self._peers():
                self.detector.watch(peer, now)
            self._follow_ring()
        return changed

    def set_status(self, status: MemberStatus) -> None:
        if status is not self.me.status:
            self._set_me(status=status)

    def mark_ready(self, epoch: int) -> None:
        """This node has pulled every partition it receives in the pending ring `epoch`."""
        if epoch > self.me.ready_epoch:
            self._set_me(ready_epoch=epoch)

    # ---- questions ----

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
        """Move this node's own status along with the ring it now knows."""
        if self.ring is None:
            return
        status = self.me.status
        owns = self.address in self.ring.current.members
        if owns and status in (MemberStatus.STANDBY, MemberStatus.JOINING):
            # Joined (or restarted after losing its saved state while owning partitions).
            self.set_status(MemberStatus.ACTIVE)
        elif status is MemberStatus.LEAVING and not owns and self.ring.pending is None:
            self.set_status(MemberStatus.LEFT)

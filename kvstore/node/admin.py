"""Admin: the operator's verbs on this node (status, join, leave, remove) and what the node
says about itself (node info, where a key lives)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from kvstore.core.cluster import MemberStatus
from kvstore.core.limits import Limits
from kvstore.core.membership import Membership
from kvstore.core.requests import (
    Location,
    MemberReport,
    NodeInfo,
    NodeStatus,
    Topology,
    TopologyMember,
)
from kvstore.core.ring import routed
from kvstore.errors import ClusterRefused
from kvstore.node.clock import Clock
from kvstore.node.router import Router
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)


class Admin:
    def __init__(
        self,
        address: str,
        node_id: str,
        actor: str,
        membership: Membership,
        router: Router,
        storage: Storage,
        limits: Limits,
        clock: Clock,
        counters: Counter[str],
        partitions: int,
        n: int,
        handoffs_pending: Callable[[], int],
    ) -> None:
        self.address = address
        self._node_id = node_id
        self._actor = actor
        self._membership = membership
        self._router = router
        self._storage = storage
        self._limits = limits
        self._clock = clock
        self._counters = counters
        self._partitions = partitions
        self._n = n
        # Partitions still to pull for a pending ring (Handoff's count).
        self._handoffs_pending = handoffs_pending

    def info(self) -> NodeInfo:
        ring = self._router.ring
        return NodeInfo(
            node_id=self._node_id,
            actor=self._actor,
            address=self.address,
            members=tuple(ring.members) if ring else (),
            partitions=self._partitions,
            n=self._n,
        )

    def locate(self, key: bytes) -> Location:
        self._limits.check_key(key)
        return self._router.locate(routed(key))

    def join(self) -> None:
        """`kvstore join`: a standby node that knows the ring asks to join it."""
        current = self._membership.me.status
        if current in (MemberStatus.JOINING, MemberStatus.ACTIVE):
            return  # asked twice: already on its way, or in
        if current is not MemberStatus.STANDBY or self._router.ring is None:
            raise ClusterRefused(
                f"node {self.address} is {current.value}"
                + ("" if self._router.ring else " and has not heard from its seeds yet")
                + ": only a standby node that knows the ring can join"
            )
        self._membership.set_status(MemberStatus.JOINING)
        log.info("asked to join")

    def leave(self) -> None:
        """`kvstore leave`: an active member hands its data off and leaves the ring."""
        current = self._membership.me.status
        if current in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return
        ring = self._router.require_ring()
        if current is not MemberStatus.ACTIVE:
            raise ClusterRefused(f"node {self.address} is {current.value}, not active")
        if len(ring.members) <= 1:
            raise ClusterRefused("the last member of a ring cannot leave it")
        self._membership.set_status(MemberStatus.LEAVING)
        log.info("asked to leave")

    def remove(self, address: str) -> None:
        """`kvstore remove`: take a dead member out of the ring (Cassandra's removenode,
        Riak's force-remove). Its partitions move to the others, rebuilt from the replicas
        that are up; a write only it held (with W=1) is lost with it. A member that is up
        must leave by itself: it hands its data off first."""
        membership = self._membership
        ring = self._router.require_ring()
        if address == self.address:
            raise ClusterRefused(
                f"node {address} cannot remove itself; to take it out, ask it to leave"
            )
        state = membership.ring
        in_ring = state is not None and any(
            address in layout.members for layout in (state.current, state.pending) if layout
        )
        record = membership.members.get(address)
        if record is None and not in_ring:
            raise ClusterRefused(f"{address} is not a member of this cluster")
        if record is None:
            # A removal must be newer than every record of it anywhere: without one to
            # outdo, peers' records would undo it.
            raise ClusterRefused(
                f"node {self.address} has not heard of {address} since it started;"
                " ask a node that has (see kvstore status)"
            )
        if record.status is MemberStatus.LEFT:
            return  # asked twice, or it had left already
        if membership.is_up(address, self._clock.monotonic()):
            raise ClusterRefused(
                f"{address} is up (as node {self.address} sees it): ask it to leave instead"
                f" (kvstore leave --node {address}), which hands its data off first"
            )
        staying = [
            a
            for a in ring.members
            if a != address
            and (
                a not in membership.members
                or membership.members[a].status
                in (MemberStatus.ACTIVE, MemberStatus.JOINING, MemberStatus.STANDBY)
            )
        ]
        if not staying:
            raise ClusterRefused(f"removing {address} would leave the ring with no member")
        membership.remove(address)
        log.warning("removed %s from the cluster (asked by an operator)", address)

    def topology(self) -> Topology:
        """The members clients may dial and the current ring (KV.Topology): members that
        left are not listed, nor is one whose record has no client address yet."""
        now = self._clock.monotonic()
        membership = self._membership
        members = tuple(
            TopologyMember(
                address=m.address,
                client_address=m.client_address,
                status=m.status.value,
                up=membership.is_up(m.address, now),
            )
            for m in sorted(membership.members.values(), key=lambda m: m.address)
            if m.status is not MemberStatus.LEFT and m.client_address
        )
        state = membership.ring
        return Topology(
            ring_epoch=state.epoch if state else 0,
            partitions=self._partitions,
            n=self._n,
            members=members,
            ring_members=state.current.members if state else (),
            owners=state.current.owners if state else (),
        )

    def status(self) -> NodeStatus:
        now = self._clock.monotonic()
        membership = self._membership
        ring, pending = self._router.ring, self._router.pending_ring
        owned = Counter(ring.owner(p) for p in range(ring.partitions)) if ring else Counter()
        future = (
            Counter(pending.owner(p) for p in range(pending.partitions)) if pending else Counter()
        )
        known = set(membership.members)
        for layout in (ring, pending):
            if layout is not None:
                known.update(layout.members)
        members = []
        for address in sorted(known):
            record = membership.members.get(address)
            members.append(
                MemberReport(
                    address=address,
                    # A ring member not heard from since this node started has no record.
                    node_id=record.node_id if record else "",
                    status=record.status.value if record else "unknown",
                    up=membership.is_up(address, now),
                    phi=0.0 if address == self.address else membership.detector.phi(address, now),
                    partitions_owned=owned[address],
                    partitions_pending=future[address],
                )
            )
        state = membership.ring
        return NodeStatus(
            address=self.address,
            node_id=self._node_id,
            ring_epoch=state.epoch if state else 0,
            ring_pending=pending is not None,
            members=tuple(members),
            hints_pending=self._storage.hint_count,
            hint_bytes=self._storage.hint_bytes,
            handoffs_pending=self._handoffs_pending(),
            counters=dict(self._counters),
        )

"""The gossip loop: one exchange with a random peer per interval, and what follows from it
(the ring rebuilt when it changed, the cluster state saved when it is worth keeping)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.cluster import ClusterView, MemberStatus
from kvstore.core.membership import ClusterMismatch, Membership
from kvstore.node.app import Node
from kvstore.node.periodic import run_every
from kvstore.rpc.peer import PeerFailure
from kvstore.storage.codec import cluster_from_proto, cluster_to_proto, encode_cluster

log = logging.getLogger(__name__)


class Gossip:
    def __init__(self, node: Node, rng: random.Random | None = None) -> None:
        self.node = node
        self.membership: Membership = node.membership
        self._rng = rng or random.Random()
        self._saved_revision = -1
        # Peers whose cluster disagrees with ours, already reported (once each, not per round).
        self._reported: set[str] = set()
        # Called once, when this node first knows a ring (its health turns SERVING).
        self.on_ring_known: Callable[[], Awaitable[None]] | None = None

    def on_request(self, request: pb.GossipRequest) -> pb.ClusterState:
        """A peer's push: merge it and answer with our view (the pull half). Raises
        ClusterMismatch or ValueError for a state this node cannot take."""
        self.merge(cluster_from_proto(request.state), request.sender or "a peer")
        return cluster_to_proto(self.membership.view())

    def merge(self, view: ClusterView, sender: str) -> None:
        try:
            changed = self.membership.on_gossip(view, self.node.clock())
        except ClusterMismatch as exc:
            if sender not in self._reported:
                self._reported.add(sender)
                log.error("gossip from %s refused: %s", sender, exc)
            raise
        if changed:
            self.node.refresh_ring()
            ring = self.membership.ring
            log.info(
                "ring epoch %d: %d members%s",
                ring.epoch if ring else 0,
                len(ring.current.members) if ring else 0,
                ", partitions moving" if ring and ring.pending else "",
            )
        self.save()

    def save(self) -> None:
        if self.membership.revision != self._saved_revision:
            self._saved_revision = self.membership.revision
            self.node.storage.save_cluster(encode_cluster(self.membership.view()))

    async def round(self) -> None:
        before = self.membership.ring
        peer = self.membership.tick(self.node.clock(), self._rng)
        if self.membership.ring is not before:
            self.node.refresh_ring()  # this node is the claimant and planned a step
        self.save()
        try:
            if peer is not None:
                await self.exchange(peer)
        finally:
            await self._after_round()

    async def _after_round(self) -> None:
        if self.node.ring is not None and self.on_ring_known is not None:
            announce, self.on_ring_known = self.on_ring_known, None
            await announce()
        # `auto_join`: a standby newcomer (or a member restarted with a wiped disk) asks to
        # join as soon as it knows the ring, as `kvstore join` would ask it.
        if (
            self.node.config.auto_join
            and self.node.ring is not None
            and self.membership.me.status is MemberStatus.STANDBY
        ):
            self.node.request_status(MemberStatus.JOINING)

    async def exchange(self, peer: str) -> None:
        """Push-pull with `peer` (a round's random peer, or one that routes by a newer ring
        than ours, to catch up from before deciding where a write goes)."""
        timeout = max(self.node.background.gossip_interval_ms / 1000, 0.5)
        try:
            reply = await self.node.peers.gossip(
                peer, self.node.address, cluster_to_proto(self.membership.view()), timeout
            )
            self.merge(cluster_from_proto(reply), sender=peer)
        except PeerFailure as exc:
            if exc.code == "FAILED_PRECONDITION" and peer not in self._reported:
                self._reported.add(peer)
                log.error("gossip with %s refused: %s", peer, exc)
            log.debug("gossip with %s failed: %s", peer, exc)
        except (ClusterMismatch, ValueError):
            pass  # reported once by merge

    async def run(self) -> None:
        interval = self.node.background.gossip_interval_ms / 1000
        await run_every(interval, self.round, "gossip", jitter=0.2)

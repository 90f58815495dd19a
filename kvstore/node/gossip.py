"""The gossip loop: one exchange with a random peer per interval, and what follows from it
(the ring rebuilt when it changed, the cluster state saved when it is worth keeping)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from kvstore.core.cluster import ClusterView, InvalidView, MemberStatus
from kvstore.core.membership import ClusterMismatch, Membership
from kvstore.core.transport import PeerFailure, PeerTransport
from kvstore.errors import StorageUnavailable
from kvstore.node.clock import Clock
from kvstore.node.periodic import run_every
from kvstore.node.router import Router
from kvstore.rpc.badinput import LogLimiter, clip
from kvstore.storage.codec import encode_cluster
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

_REPORT_INTERVAL_S = 600.0
_REPORTED_PEERS = 16


def _more(held_back: int) -> str:
    return f" ({held_back} more refusals not logged)" if held_back else ""


class Gossip:
    def __init__(
        self,
        address: str,
        membership: Membership,
        router: Router,
        transport: PeerTransport,
        storage: Storage,
        clock: Clock,
        interval_ms: int,
        join: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.address = address
        self.membership = membership
        self._router = router
        self._transport = transport
        self._storage = storage
        self._clock = clock
        self._interval_s = interval_ms / 1000
        # `auto_join`: how a standby newcomer (or a member restarted with a wiped disk) asks
        # to join as soon as it knows the ring, as `kvstore join` would ask it.
        self._join = join
        self._rng = rng or random.Random()
        self._saved_revision = -1
        # Peers whose cluster disagrees with ours, already reported (once each per 10 min, not
        # per round). Bounded: `sender` is whatever a caller says, so a flood of made-up
        # senders shares one line per interval instead of writing one line (and keeping one
        # entry) each.
        self._reported = LogLimiter(_REPORT_INTERVAL_S, clock.monotonic, _REPORTED_PEERS)
        # Called once, when this node first knows a ring (its health turns SERVING).
        self.on_ring_known: Callable[[], Awaitable[None]] | None = None

    def on_push(self, view: ClusterView, sender: str) -> ClusterView:
        """A peer's push: merge it and answer with our view (the pull half). Raises
        ClusterMismatch for a cluster this node cannot take."""
        self.merge(view, sender or "a peer")
        return self.membership.view()

    def merge(self, view: ClusterView, sender: str) -> None:
        try:
            changed = self.membership.on_gossip(view, self._clock.monotonic())
        except (ClusterMismatch, InvalidView) as exc:
            held_back = self._reported.admit(sender)
            if held_back is not None:
                why = clip(str(exc), 1000)  # names the members the caller sent
                log.error("gossip from %s refused: %s%s", clip(sender), why, _more(held_back))
            raise
        if changed:
            self._router.refresh()
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
            revision = self.membership.revision
            try:
                self._storage.save_cluster(encode_cluster(self.membership.view()))
            except StorageUnavailable:
                # A storage fault (reported by the node's storage watch) must not stop
                # gossip: the node still serves reads, and its peers must not hold it down.
                # The revision stays unsaved, so a round after the fault saves it.
                return
            self._saved_revision = revision

    async def round(self) -> None:
        before = self.membership.ring
        peer = self.membership.tick(self._clock.monotonic(), self._rng)
        if self.membership.ring is not before:
            self._router.refresh()  # this node is the claimant and planned a step
        self.save()
        self._transport.retain(self.membership.contacts())
        try:
            if peer is not None:
                await self.exchange(peer)
        finally:
            await self._after_round()

    async def _after_round(self) -> None:
        if self._router.ring is not None and self.on_ring_known is not None:
            announce, self.on_ring_known = self.on_ring_known, None
            await announce()
        if (
            self._join is not None
            and self._router.ring is not None
            and self.membership.me.status is MemberStatus.STANDBY
        ):
            self._join()

    async def exchange(self, peer: str) -> None:
        """Push-pull with `peer` (a round's random peer, or one that routes by a newer ring
        than ours, to catch up from before deciding where a write goes)."""
        timeout = max(self._interval_s, 0.5)
        try:
            reply = await self._transport.gossip(
                peer, self.address, self.membership.view(), timeout
            )
            self.merge(reply, sender=peer)
        except PeerFailure as exc:
            held_back = self._reported.admit(peer) if exc.code == "FAILED_PRECONDITION" else None
            if held_back is not None:
                log.error("gossip with %s refused: %s%s", peer, exc, _more(held_back))
            log.debug("gossip with %s failed: %s", peer, exc)
        except (ClusterMismatch, ValueError):
            pass  # reported once by merge

    async def run(self) -> None:
        await run_every(self._clock, self._interval_s, self.round, "gossip", jitter=0.2)

"""Ownership handoff, and the cleanup of data a node holds but does not own.

While a ring change is pending, each node that will become a primary of a partition pulls
the partition's records from its current primaries (pages bounded in records and bytes),
merging them; when it has every partition it receives, it tells the claimant through its
member record (`ready_epoch`/`ready_ring`), and the claimant commits the ring. Writes made
meanwhile are copied to it by their coordinators.

A current primary the failure detector holds down is not waited for: the change would
otherwise hang on a dead member for good. What only it holds is not lost by skipping it:
it is still a primary until the commit, and once it is back its cleanup (below) pushes
everything of partitions it no longer owns to their primaries; the writes it took part in
also sit on the other primaries or in hints. A member that will never come back is taken
out with `kvstore remove`, and anti-entropy rebuilds its replicas from the others.

Any data a node holds for a partition it is no primary of (after a commit, or a write from
a coordinator with an older ring) is pushed to the partition's primaries and deleted once
every one of them acknowledged it, and only if it did not change meanwhile. A leaving node
turns LEFT only once this has left it no data and hint delivery no hints: only then may an
operator stop it without losing a write it alone held.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from kvstore.core import ringplan
from kvstore.core.cluster import MemberStatus, RingState
from kvstore.core.ring import Ring
from kvstore.node.antientropy import partition_range
from kvstore.node.app import Node
from kvstore.node.gossip import Gossip
from kvstore.node.periodic import run_every
from kvstore.rpc.peer import PeerFailure, check_page_advances
from kvstore.storage.codec import decode_record

log = logging.getLogger(__name__)

PAGE = 500


class Handoff:
    def __init__(self, node: Node, gossip: Gossip) -> None:
        self.node = node
        self.gossip = gossip
        self._pulled: set[int] = set()
        self._pulled_ring = b""

    def pending_pulls(self) -> int:
        """Partitions this node still has to pull for the pending ring."""
        state = self.node.membership.ring
        if state is None or state.pending is None:
            return 0
        if self.node.membership.me.ready_for(state):
            return 0
        mine = ringplan.receivers(state, self.node.config.quorum.n).get(self.node.address, [])
        if self._pulled_ring != state.digest():
            return len(mine)
        return len([p for p in mine if p not in self._pulled])

    async def pull_round(self) -> None:
        node = self.node
        state = node.membership.ring
        ring = node.ring
        if state is None or state.pending is None or ring is None:
            return
        if node.membership.me.ready_for(state):
            return
        if self._pulled_ring != state.digest():
            self._pulled, self._pulled_ring = set(), state.digest()
        timeout = node.limits.request_timeout_ms / 1000
        skipped: dict[str, list[int]] = {}
        try:
            await self._pull(state, ring, skipped, timeout)
        finally:
            for source, partitions in skipped.items():
                log.info("not pulling partitions %s from %s: held down", partitions, source)

    async def _pull(
        self, state: RingState, ring: Ring, skipped: dict[str, list[int]], timeout: float
    ) -> None:
        node = self.node
        for partition in ringplan.receivers(state, node.config.quorum.n).get(node.address, []):
            if partition in self._pulled:
                continue
            sources = []
            for source in ring.partition_primaries(partition):
                if source == node.address:
                    continue
                if node.is_up(source):
                    sources.append(source)
                else:
                    node.counters["handoff_sources_skipped"] += 1
                    skipped.setdefault(source, []).append(partition)
            if not sources:
                # Every current primary held down: nothing to pull from. Wait (a brief
                # suspicion passes); a member gone for good is for `kvstore remove`.
                log.info("partition %d: every current primary is down; waiting", partition)
                return
            try:
                for source in sources:
                    after = b""
                    while True:
                        records, last, done = await node.peers.partition_records(
                            source, partition, after, PAGE, timeout
                        )
                        check_page_advances(source, len(records), last, after, done)
                        after = last
                        node.storage.merge_many(records)
                        node.counters["handoff_keys_received"] += len(records)
                        if done:
                            break
            except PeerFailure as exc:
                log.info("pulling partition %d failed (will retry): %s", partition, exc)
                return
            self._pulled.add(partition)
        node.membership.mark_ready(state)
        self.gossip.save()
        log.info("pulled every partition this node receives in ring epoch %d", state.epoch)

    async def cleanup_round(self) -> int:
        """Push away and delete data of partitions this node is no primary of; returns the
        number of keys moved."""
        node = self.node
        ring = node.ring
        if ring is None:
            return 0
        pending = node.pending_ring
        moved = 0
        timeout = node.limits.request_timeout_ms / 1000
        for partition in range(ring.partitions):
            primaries = ring.partition_primaries(partition)
            if node.address in primaries:
                continue
            if pending is not None and node.address in pending.partition_primaries(partition):
                continue
            low, high = partition_range(ring, partition)
            scan = node.storage.scan(low, high)
            page = [(key, decode_record(raw)) for _, key, raw in itertools.islice(scan, PAGE)]
            if not page:
                continue
            try:
                await asyncio.gather(*(node.peers.merge_batch(p, page, timeout) for p in primaries))
            except PeerFailure as exc:
                log.info("handing off partition %d failed (will retry): %s", partition, exc)
                continue
            for key, state in page:
                moved += node.storage.delete_if_unchanged(key, state)
        node.counters["handoff_keys_moved"] += moved
        return moved

    async def run(self) -> None:
        interval = self.node.background.handoff_interval_ms / 1000
        await run_every(interval, self.round, "handoff")

    async def round(self) -> None:
        await self.pull_round()
        await self.cleanup_round()
        self.finish_leaving()

    def finish_leaving(self) -> bool:
        """Turn LEFT if this node is leaving (or was removed), owns nothing, and holds no
        data and no hints; True when it did."""
        node = self.node
        membership = node.membership
        if membership.me.status is not MemberStatus.LEAVING or not membership.out_of_ring:
            return False
        if node.storage.hint_count or node.storage.has_data():
            return False
        membership.finish_leaving()
        self.gossip.save()
        log.info("left the ring: no data and no hints left here; the node can be stopped")
        return True

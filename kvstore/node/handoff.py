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
from collections import Counter
from collections.abc import Callable
from functools import partial

from kvstore.core import ringplan
from kvstore.core.cluster import MemberStatus, RingState
from kvstore.core.limits import DEFAULT_LIMITS, Limits
from kvstore.core.membership import Membership
from kvstore.core.partitions import partition_range
from kvstore.core.ring import Ring
from kvstore.core.transport import PeerFailure, PeerTransport, RecordPage
from kvstore.errors import InvalidArgument
from kvstore.node.clock import Clock
from kvstore.node.periodic import run_every
from kvstore.node.router import Router
from kvstore.storage.codec import decode_record
from kvstore.storage.engine import Storage
from kvstore.storage.paging import check_page_advances, check_page_records, take_page

log = logging.getLogger(__name__)

PAGE = 500
# Records per page of a partition served to a puller (it asks for PAGE).
MAX_PAGE = 5_000


class Handoff:
    def __init__(
        self,
        address: str,
        membership: Membership,
        router: Router,
        storage: Storage,
        transport: PeerTransport,
        clock: Clock,
        counters: Counter[str],
        n: int,
        timeout_ms: int,
        interval_ms: int,
        save_cluster: Callable[[], None],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._limits = limits
        self.address = address
        self._membership = membership
        self._router = router
        self._storage = storage
        self._transport = transport
        self._clock = clock
        self._counters = counters
        self._n = n
        self._timeout_s = timeout_ms / 1000
        self._interval_s = interval_ms / 1000
        # Persists the cluster state once this node's readiness or departure changed it.
        self._save_cluster = save_cluster
        self._pulled: set[int] = set()
        self._pulled_ring = b""

    # ---- serving pullers ----

    def partition_page(self, partition: int, after: bytes, limit: int) -> RecordPage:
        """A page of this node's records of a partition after the storage key `after`, for
        a node pulling it: at most `limit` records (1..MAX_PAGE) and PAGE_BYTES."""
        ring = self._router.require_ring()
        if not 0 <= partition < ring.partitions:
            raise InvalidArgument(f"partition must be in 0..{ring.partitions - 1}")
        low, high = partition_range(ring, partition)
        scan = self._storage.scan(low, high, after)
        page, last, done = take_page(scan, after, min(max(limit, 1), MAX_PAGE))
        return [(key, decode_record(raw)) for _, key, raw in page], last, done

    # ---- pulling ----

    def pending_pulls(self) -> int:
        """Partitions this node still has to pull for the pending ring."""
        state = self._membership.ring
        if state is None or state.pending is None:
            return 0
        if self._membership.me.ready_for(state):
            return 0
        mine = ringplan.receivers(state, self._n).get(self.address, [])
        if self._pulled_ring != state.digest():
            return len(mine)
        return len([p for p in mine if p not in self._pulled])

    async def pull_round(self) -> None:
        state = self._membership.ring
        ring = self._router.ring
        if state is None or state.pending is None or ring is None:
            return
        if self._membership.me.ready_for(state):
            return
        if self._pulled_ring != state.digest():
            self._pulled, self._pulled_ring = set(), state.digest()
        timeout = self._timeout_s
        skipped: dict[str, list[int]] = {}
        try:
            await self._pull(state, ring, skipped, timeout)
        finally:
            for source, partitions in skipped.items():
                log.info("not pulling partitions %s from %s: held down", partitions, source)

    async def _pull(
        self, state: RingState, ring: Ring, skipped: dict[str, list[int]], timeout: float
    ) -> None:
        for partition in ringplan.receivers(state, self._n).get(self.address, []):
            if partition in self._pulled:
                continue
            sources = []
            for source in ring.partition_primaries(partition):
                if source == self.address:
                    continue
                if self._router.is_up(source):
                    sources.append(source)
                else:
                    self._counters["handoff_sources_skipped"] += 1
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
                        records, last, done = await self._transport.partition_records(
                            source, partition, after, PAGE, timeout
                        )
                        check_page_advances(source, len(records), last, after, done)
                        taken = check_page_records(
                            source,
                            records,
                            self._limits,
                            partial(_in_partition, ring, partition),
                        )
                        self._counters["records_refused"] += len(records) - len(taken)
                        after = last
                        self._storage.merge_many(taken)
                        self._counters["handoff_keys_received"] += len(records)
                        if done:
                            break
            except PeerFailure as exc:
                log.info("pulling partition %d failed (will retry): %s", partition, exc)
                return
            self._pulled.add(partition)
        self._membership.mark_ready(state)
        self._save_cluster()
        log.info("pulled every partition this node receives in ring epoch %d", state.epoch)

    async def cleanup_round(self) -> int:
        """Push away and delete data of partitions this node is no primary of; returns the
        number of keys moved."""
        ring = self._router.ring
        if ring is None:
            return 0
        pending = self._router.pending_ring
        moved = 0
        timeout = self._timeout_s
        for partition in range(ring.partitions):
            primaries = ring.partition_primaries(partition)
            if self.address in primaries:
                continue
            if pending is not None and self.address in pending.partition_primaries(partition):
                continue
            low, high = partition_range(ring, partition)
            scan = self._storage.scan(low, high)
            page = [(key, decode_record(raw)) for _, key, raw in itertools.islice(scan, PAGE)]
            if not page:
                continue
            try:
                await asyncio.gather(
                    *(self._transport.merge_batch(p, page, timeout) for p in primaries)
                )
            except PeerFailure as exc:
                log.info("handing off partition %d failed (will retry): %s", partition, exc)
                continue
            for key, state in page:
                moved += self._storage.delete_if_unchanged(key, state)
        self._counters["handoff_keys_moved"] += moved
        return moved

    async def run(self) -> None:
        await run_every(self._clock, self._interval_s, self.round, "handoff")

    async def round(self) -> None:
        await self.pull_round()
        await self.cleanup_round()
        self.finish_leaving()

    def finish_leaving(self) -> bool:
        """Turn LEFT if this node is leaving (or was removed), owns nothing, and holds no
        data and no hints; True when it did."""
        membership = self._membership
        if membership.me.status is not MemberStatus.LEAVING or not membership.out_of_ring:
            return False
        if self._storage.hint_count or self._storage.has_data():
            return False
        membership.finish_leaving()
        self._save_cluster()
        log.info("left the ring: no data and no hints left here; the node can be stopped")
        return True


def _in_partition(ring: Ring, partition: int, key: bytes) -> bool:
    return ring.partition_for_key(key) == partition

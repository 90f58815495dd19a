"""Active anti-entropy: one partition compared with one other replica of it per interval,
by Merkle trees built from the stored records; the records of differing segments are
exchanged both ways, so both replicas end with the merge. Rebuilds a replica that lost its
data, and repairs what reads never touch.

Trees are built on demand by scanning the partition (a key range in storage), not kept up
to date on every write: a partition's scan costs about as much as the exchange itself at
the sizes this store is measured at. A tree served to peers is cached for TREE_CACHE_S, so
the three requests of one exchange scan once; a stale cached tree costs a needless segment
exchange (merges are idempotent) or delays a repair to the next round, never loses data.

Records of differing segments move in pages of at most PAGE_BYTES (kvstore.storage.paging), both
ways, in storage order: a partition far bigger than a gRPC frame (or than memory) is
repaired page by page, with one page of each side in memory at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from kvstore.core.antientropy import (
    AskHashes,
    ExchangeSegments,
    MerkleTree,
    TreeExchange,
    record_digest,
    segment_of,
)
from kvstore.core.limits import DEFAULT_LIMITS, Limits
from kvstore.core.maintenance import MAX_REPORTED_ERRORS, RepairReport
from kvstore.core.partitions import (
    check_partition,
    partition_bits,
    partition_range,
    segment_ranges,
)
from kvstore.core.ring import Ring, routed
from kvstore.core.transport import PeerFailure, PeerTransport, RecordPage
from kvstore.core.versions import KeyState
from kvstore.errors import InvalidArgument, KvError
from kvstore.node.clock import Clock
from kvstore.node.periodic import run_every
from kvstore.node.router import Router
from kvstore.storage.codec import decode_record
from kvstore.storage.engine import Storage, position_of
from kvstore.storage.paging import (
    StoredRecord,
    check_page_advances,
    check_page_records,
    take_page,
)

log = logging.getLogger(__name__)

TREE_CACHE_S = 5.0
# An operator's repair (`kvstore repair`): its timeout when the request gives none (0), and
# the most a request may ask.
DEFAULT_REPAIR_TIMEOUT_MS = 60_000
MAX_REPAIR_TIMEOUT_MS = 3_600_000


@dataclass(slots=True)
class ExchangeTally:
    """What exchanges did, added up: keys that differed, and records merged on each side
    (here: the peer's records merged into this node; there: this node's sent to the peer)."""

    different: int = 0
    merged_here: int = 0
    merged_there: int = 0

    @property
    def merged(self) -> int:
        return self.merged_here + self.merged_there


class AntiEntropy:
    def __init__(
        self,
        address: str,
        router: Router,
        storage: Storage,
        transport: PeerTransport,
        clock: Clock,
        counters: Counter[str],
        timeout_ms: int,
        interval_ms: int,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.address = address
        self._limits = limits
        self._router = router
        self._storage = storage
        self._transport = transport
        self._clock = clock
        self._counters = counters
        self._timeout_s = timeout_ms / 1000
        self._interval_s = interval_ms / 1000
        self._served: dict[int, tuple[float, MerkleTree]] = {}
        self._cursor = 0
        self._pairs_of: tuple[Ring, list[tuple[int, str]]] | None = None

    # ---- serving peers ----

    def build_tree(self, ring: Ring, partition: int) -> MerkleTree:
        low, high = partition_range(ring, partition)
        bits = partition_bits(ring)
        return MerkleTree.build(
            (segment_of(position_of(dk), bits), key, record_digest(raw))
            for dk, key, raw in self._storage.scan(low, high)
        )

    def hashes(self, partition: int, level: int, indices: Sequence[int]) -> list[bytes]:
        """A peer's question: the tree's hashes at `level`. Anything in it this node cannot
        answer (a level or an index the tree lacks) is InvalidArgument."""
        try:
            return self._hashes(partition, level, indices)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc

    def _hashes(self, partition: int, level: int, indices: Sequence[int]) -> list[bytes]:
        ring = self._router.require_ring()
        check_partition(ring, partition)
        now = self._clock.monotonic()
        cached = self._served.get(partition)
        if cached is None or now - cached[0] > TREE_CACHE_S:
            cached = (now, self.build_tree(ring, partition))
            self._served[partition] = cached
            for old in [p for p, (at, _) in self._served.items() if now - at > TREE_CACHE_S]:
                del self._served[old]
        return cached[1].hashes(level, indices)

    def segment_page(self, partition: int, segments: Sequence[int], after: bytes) -> RecordPage:
        """A page (at most PAGE_BYTES) of this node's records in some segments of a
        partition, after the storage key `after`: (records, last, done), for a peer."""
        ring = self._router.require_ring()
        check_partition(ring, partition)
        ranges = segment_ranges(ring, partition, segments)
        page, last, done = take_page(self._scan(ranges, after), after)
        return [(key, decode_record(raw)) for _, key, raw in page], last, done

    def segment_records(
        self,
        partition: int,
        segments: Sequence[int],
        after: bytes = b"",
        upto: bytes | None = None,
    ) -> list[tuple[bytes, KeyState]]:
        """Every record of this node in some segments of a partition whose storage key is in
        (after, upto], or after `after` when `upto` is None. Unbounded in size: for tests and
        tools; an exchange reads pages."""
        ring = self._router.require_ring()
        check_partition(ring, partition)
        ranges = segment_ranges(ring, partition, segments)
        return [(key, decode_record(raw)) for _, key, raw in self._scan(ranges, after, upto)]

    def _scan(
        self, ranges: Sequence[tuple[int, int]], after: bytes, upto: bytes | None = None
    ) -> Iterator[StoredRecord]:
        """The stored records in the position ranges, in storage order, with storage keys in
        (after, upto] (no upper bound when `upto` is None)."""
        for low, high in ranges:
            # Seeks straight to each range (past `after`) instead of filtering the partition:
            # an exchange of a few segments reads only those.
            for record in self._storage.scan(low, high, after):
                if upto is not None and record[0] > upto:
                    return
                yield record

    # ---- driving exchanges ----

    def _pairs(self, ring: Ring) -> list[tuple[int, str]]:
        """Every (partition, peer) this node compares, for `ring` (worked out once per ring:
        a round runs every few hundred ms)."""
        if self._pairs_of is not None and self._pairs_of[0] is ring:
            return self._pairs_of[1]
        me = self.address
        pairs: list[tuple[int, str]] = []
        for partition in range(ring.partitions):
            primaries = ring.partition_primaries(partition)
            if me in primaries:
                pairs.extend((partition, peer) for peer in primaries if peer != me)
        self._pairs_of = (ring, pairs)
        return pairs

    async def round(self) -> bool:
        """Compare the next (partition, peer) pair whose peer is up; True if one ran."""
        ring = self._router.ring
        if ring is None:
            return False
        pairs = self._pairs(ring)
        for _ in range(len(pairs)):
            partition, peer = pairs[self._cursor % len(pairs)]
            self._cursor += 1
            if self._router.is_up(peer):
                await self.exchange(ring, partition, peer)
                return True
        return False

    async def exchange(
        self, ring: Ring, partition: int, peer: str, tally: ExchangeTally | None = None
    ) -> int:
        """Compare one partition with `peer` and repair both sides; returns the number of
        keys that were different. `tally` adds up what it did as it goes (an exchange that
        fails midway keeps what it repaired so far)."""
        tally = ExchangeTally() if tally is None else tally
        timeout = self._timeout_s
        walk = TreeExchange(self.build_tree(ring, partition))
        step: AskHashes | ExchangeSegments = walk.start()
        while isinstance(step, AskHashes):
            hashes = await self._transport.tree_hashes(
                peer, partition, step.level, step.indices, timeout
            )
            step = walk.on_hashes(hashes)
        self._counters["ae_exchanges"] += 1
        segments = step.segments
        if not segments:
            return 0
        ranges = segment_ranges(ring, partition, segments)
        different = 0
        # Walk the differing segments in storage order, one page of the peer's records at a
        # time, each compared with this node's records of the same key interval.
        after = b""
        while True:
            theirs, last, done = await self._transport.segment_records(
                peer, partition, segments, after, timeout
            )
            check_page_advances(peer, len(theirs), last, after, done)
            taken = check_page_records(peer, theirs, self._limits, partial(_in_ranges, ranges))
            self._counters["records_refused"] += len(theirs) - len(taken)
            # The peer's page covers (after, last]; its last page covers everything after.
            repaired = await self._repair_interval(
                peer, ranges, dict(taken), after, None if done else last, timeout, tally
            )
            # Counted page by page: an exchange that fails midway still repaired these.
            self._counters["ae_keys_repaired"] += repaired
            different += repaired
            if done:
                break
            after = last
        self._counters["ae_segments_repaired"] += len(segments)
        return different

    async def _repair_interval(
        self,
        peer: str,
        ranges: Sequence[tuple[int, int]],
        theirs: dict[bytes, KeyState],
        after: bytes,
        upto: bytes | None,
        timeout: float,
        tally: ExchangeTally,
    ) -> int:
        """Make this node and `peer` agree on the keys of the ranges with storage keys in
        (after, upto] (no upper bound when None), given all the peer's records there; returns
        the number of keys that differed.

        This node's records of the interval are read in pages too: the peer's page can cover
        far more of this node's data than PAGE_BYTES (a wiped peer sends one empty page).
        """
        storage = self._storage
        unseen = set(theirs)  # the peer's keys this node has no record of, once all are read
        different = 0
        local_after = after
        done = False
        while not done:
            page, local_after, done = take_page(self._scan(ranges, local_after, upto), local_after)
            mine = [(key, decode_record(raw)) for _, key, raw in page]
            unseen.difference_update(key for key, _ in mine)
            differing = [key for key, state in mine if theirs.get(key) != state]
            different += len(differing)
            merging = [(key, theirs[key]) for key in differing if key in theirs]
            storage.merge_many(merging)
            tally.merged_here += len(merging)
            tally.merged_there += await self._push(peer, differing, theirs, timeout)
        missing = sorted(unseen)
        different += len(missing)
        storage.merge_many((key, theirs[key]) for key in missing)
        tally.merged_here += len(missing)
        # Merged states that equal the peer's are not sent back: only a write that landed
        # here meanwhile makes one differ.
        tally.merged_there += await self._push(peer, missing, theirs, timeout)
        tally.different += different
        return different

    async def _push(
        self, peer: str, keys: Sequence[bytes], theirs: dict[bytes, KeyState], timeout: float
    ) -> int:
        """Send the peer this node's merged state of each key where it differs from the
        peer's; returns how many records were sent."""
        push = []
        for key in keys:
            merged = self._storage.get(key)
            if merged is not None and merged != theirs.get(key):
                push.append((key, merged))
        if push:
            await self._transport.merge_batch(peer, push, timeout)
        return len(push)

    async def run(self) -> None:
        await run_every(self._clock, self._interval_s, self.round, "anti-entropy")

    # ---- an operator's repair ----

    def repair_plan(self, partitions: Sequence[int]) -> tuple[Ring, list[int]]:
        """The ring and the partitions a repair compares: those named, each checked (in the
        ring, held by this node), or every partition this node holds when none are named.
        A bad one is InvalidArgument, and nothing runs."""
        ring = self._router.require_ring()
        me = self.address
        if len(partitions) > ring.partitions:
            raise InvalidArgument(
                f"{len(partitions)} partitions named; the ring has {ring.partitions}"
            )
        if not partitions:
            return ring, [p for p in range(ring.partitions) if me in ring.partition_primaries(p)]
        named = sorted(set(partitions))
        outside = [p for p in named if not 0 <= p < ring.partitions]
        if outside:
            raise InvalidArgument(
                f"partitions {outside[:10]} are not in the ring (0..{ring.partitions - 1})"
            )
        foreign = [p for p in named if me not in ring.partition_primaries(p)]
        if foreign:
            raise InvalidArgument(
                f"this node ({me}) holds no replica of partitions {foreign[:10]}: ask one of"
                " their primaries (`kvstore locate`, `kvstore status`)"
            )
        return ring, named

    async def repair(self, partitions: Sequence[int], timeout_ms: int = 0) -> RepairReport:
        """Compare each partition (see repair_plan) with every other replica of it now, one
        exchange at a time, within `timeout_ms` in all (0: DEFAULT_REPAIR_TIMEOUT_MS);
        exchanges not finished by then count as failed."""
        if not 0 <= timeout_ms <= MAX_REPAIR_TIMEOUT_MS:
            raise InvalidArgument(
                f"repair timeout_ms must be 0 (the default) to {MAX_REPAIR_TIMEOUT_MS},"
                f" got {timeout_ms}"
            )
        ring, plan = self.repair_plan(partitions)
        deadline = self._clock.monotonic() + (timeout_ms or DEFAULT_REPAIR_TIMEOUT_MS) / 1000
        tally = ExchangeTally()
        exchanges = failed = 0
        errors: list[str] = []
        for partition in plan:
            for peer in ring.partition_primaries(partition):
                if peer == self.address:
                    continue
                exchanges += 1
                remaining = deadline - self._clock.monotonic()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    await asyncio.wait_for(self.exchange(ring, partition, peer, tally), remaining)
                except TimeoutError:
                    failed += 1
                    errors.append(f"partition {partition} with {peer}: the repair timed out")
                except (PeerFailure, KvError) as exc:
                    failed += 1
                    errors.append(f"partition {partition} with {peer}: {exc}")
        self._counters["ae_repairs"] += 1
        log.info(
            "repair: %d partitions, %d exchanges (%d failed), %d records merged",
            len(plan),
            exchanges,
            failed,
            tally.merged,
        )
        return RepairReport(
            partitions=len(plan),
            exchanges=exchanges,
            keys_repaired=tally.merged,
            failed=failed,
            errors=tuple(errors[:MAX_REPORTED_ERRORS]),
        )


def _in_ranges(ranges: Sequence[tuple[int, int]], key: bytes) -> bool:
    """Whether the key's ring position is in one of the [low, high) ranges asked for."""
    position = routed(key).position
    return any(low <= position < high for low, high in ranges)

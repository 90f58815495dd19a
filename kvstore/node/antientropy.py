"""Active anti-entropy: one partition compared with one other replica of it per interval,
by Merkle trees built from the stored records; the records of differing segments are
exchanged both ways, so both replicas end with the merge. Rebuilds a replica that lost its
data, and repairs what reads never touch.

Trees are built on demand by scanning the partition (a key range in storage), not kept up
to date on every write: a partition's scan costs about as much as the exchange itself at
the sizes this store is measured at. A tree served to peers is cached for TREE_CACHE_S, so
the three requests of one exchange scan once; a stale cached tree costs a needless segment
exchange (merges are idempotent) or delays a repair to the next round, never loses data.

Records of differing segments move in pages of at most PAGE_BYTES (kvstore.rpc.peer), both
ways, in storage order: a partition far bigger than a gRPC frame (or than memory) is
repaired page by page, with one page of each side in memory at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from kvstore.core.antientropy import (
    LEAVES,
    AskHashes,
    ExchangeSegments,
    MerkleTree,
    TreeExchange,
    record_digest,
    segment_of,
)
from kvstore.core.ring import Ring
from kvstore.core.versions import KeyState
from kvstore.errors import InvalidArgument
from kvstore.node.app import Node
from kvstore.node.periodic import run_every
from kvstore.rpc.peer import StoredRecord, check_page_advances, take_page
from kvstore.storage.codec import decode_record
from kvstore.storage.engine import position_of

log = logging.getLogger(__name__)

TREE_CACHE_S = 5.0


def partition_bits(ring: Ring) -> int:
    return ring.partitions.bit_length() - 1


def partition_range(ring: Ring, partition: int) -> tuple[int, int]:
    """[low, high) of ring positions in the partition."""
    shift = 64 - partition_bits(ring)
    return partition << shift, (partition + 1) << shift


def segment_ranges(ring: Ring, partition: int, segments: Sequence[int]) -> list[tuple[int, int]]:
    """The [low, high) position ranges the segments (tree leaves) of a partition cover, in
    order, adjacent segments joined: a segment is a contiguous slice of its partition."""
    low, high = partition_range(ring, partition)
    width = (high - low) // LEAVES
    ranges: list[tuple[int, int]] = []
    for segment in sorted(set(segments)):
        # Checked, not trusted: the segments come from a peer, and one past the last would
        # read the next partition.
        if not 0 <= segment < LEAVES:
            raise InvalidArgument(f"segment must be in 0..{LEAVES - 1}, got {segment}")
        start = low + segment * width
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + width)
        else:
            ranges.append((start, start + width))
    return ranges


class AntiEntropy:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._served: dict[int, tuple[float, MerkleTree]] = {}
        self._cursor = 0

    # ---- serving peers ----

    def build_tree(self, ring: Ring, partition: int) -> MerkleTree:
        low, high = partition_range(ring, partition)
        bits = partition_bits(ring)
        return MerkleTree.build(
            (segment_of(position_of(dk), bits), key, record_digest(raw))
            for dk, key, raw in self.node.storage.scan(low, high)
        )

    def hashes(self, partition: int, level: int, indices: Sequence[int]) -> list[bytes]:
        ring = self.node.require_ring()
        _check_partition(ring, partition)
        now = self.node.clock()
        cached = self._served.get(partition)
        if cached is None or now - cached[0] > TREE_CACHE_S:
            cached = (now, self.build_tree(ring, partition))
            self._served[partition] = cached
            for old in [p for p, (at, _) in self._served.items() if now - at > TREE_CACHE_S]:
                del self._served[old]
        return cached[1].hashes(level, indices)

    def segment_page(
        self, partition: int, segments: Sequence[int], after: bytes
    ) -> tuple[list[tuple[bytes, KeyState]], bytes, bool]:
        """A page (at most PAGE_BYTES) of this node's records in some segments of a
        partition, after the storage key `after`: (records, last, done), for a peer."""
        ring = self.node.require_ring()
        _check_partition(ring, partition)
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
        ring = self.node.require_ring()
        _check_partition(ring, partition)
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
            for record in self.node.storage.scan(low, high, after):
                if upto is not None and record[0] > upto:
                    return
                yield record

    # ---- driving exchanges ----

    def _pairs(self, ring: Ring) -> list[tuple[int, str]]:
        me = self.node.address
        pairs: list[tuple[int, str]] = []
        for partition in range(ring.partitions):
            primaries = ring.partition_primaries(partition)
            if me in primaries:
                pairs.extend((partition, peer) for peer in primaries if peer != me)
        return pairs

    async def round(self) -> bool:
        """Compare the next (partition, peer) pair whose peer is up; True if one ran."""
        ring = self.node.ring
        if ring is None:
            return False
        pairs = self._pairs(ring)
        for _ in range(len(pairs)):
            partition, peer = pairs[self._cursor % len(pairs)]
            self._cursor += 1
            if self.node.is_up(peer):
                await self.exchange(ring, partition, peer)
                return True
        return False

    async def exchange(self, ring: Ring, partition: int, peer: str) -> int:
        """Compare one partition with `peer` and repair both sides; returns the number of
        keys that were different."""
        node = self.node
        timeout = node.limits.request_timeout_ms / 1000
        walk = TreeExchange(self.build_tree(ring, partition))
        step: AskHashes | ExchangeSegments = walk.start()
        while isinstance(step, AskHashes):
            hashes = await node.peers.tree_hashes(
                peer, partition, step.level, step.indices, timeout
            )
            step = walk.on_hashes(hashes)
        node.counters["ae_exchanges"] += 1
        segments = step.segments
        if not segments:
            return 0
        ranges = segment_ranges(ring, partition, segments)
        different = 0
        # Walk the differing segments in storage order, one page of the peer's records at a
        # time, each compared with this node's records of the same key interval.
        after = b""
        while True:
            theirs, last, done = await node.peers.segment_records(
                peer, partition, segments, after, timeout
            )
            check_page_advances(peer, len(theirs), last, after, done)
            # The peer's page covers (after, last]; its last page covers everything after.
            repaired = await self._repair_interval(
                peer, ranges, dict(theirs), after, None if done else last, timeout
            )
            # Counted page by page: an exchange that fails midway still repaired these.
            node.counters["ae_keys_repaired"] += repaired
            different += repaired
            if done:
                break
            after = last
        node.counters["ae_segments_repaired"] += len(segments)
        return different

    async def _repair_interval(
        self,
        peer: str,
        ranges: Sequence[tuple[int, int]],
        theirs: dict[bytes, KeyState],
        after: bytes,
        upto: bytes | None,
        timeout: float,
    ) -> int:
        """Make this node and `peer` agree on the keys of the ranges with storage keys in
        (after, upto] (no upper bound when None), given all the peer's records there; returns
        the number of keys that differed.

        This node's records of the interval are read in pages too: the peer's page can cover
        far more of this node's data than PAGE_BYTES (a wiped peer sends one empty page).
        """
        node = self.node
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
            node.storage.merge_many((key, theirs[key]) for key in differing if key in theirs)
            await self._push(peer, differing, theirs, timeout)
        missing = sorted(unseen)
        different += len(missing)
        node.storage.merge_many((key, theirs[key]) for key in missing)
        # Merged states that equal the peer's are not sent back: only a write that landed
        # here meanwhile makes one differ.
        await self._push(peer, missing, theirs, timeout)
        return different

    async def _push(
        self, peer: str, keys: Sequence[bytes], theirs: dict[bytes, KeyState], timeout: float
    ) -> None:
        """Send the peer this node's merged state of each key where it differs from the
        peer's."""
        push = []
        for key in keys:
            merged = self.node.storage.get(key)
            if merged is not None and merged != theirs.get(key):
                push.append((key, merged))
        if push:
            await self.node.peers.merge_batch(peer, push, timeout)

    async def run(self) -> None:
        interval = self.node.background.anti_entropy_interval_ms / 1000
        await run_every(interval, self.round, "anti-entropy")


def _check_partition(ring: Ring, partition: int) -> None:
    if not 0 <= partition < ring.partitions:
        raise InvalidArgument(f"partition must be in 0..{ring.partitions - 1}, got {partition}")

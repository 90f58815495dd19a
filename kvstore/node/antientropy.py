"""Active anti-entropy: one partition compared with one other replica of it per interval,
by Merkle trees built from the stored records; the records of differing segments are
exchanged both ways, so both replicas end with the merge. Rebuilds a replica that lost its
data, and repairs what reads never touch.

Trees are built on demand by scanning the partition (a key range in storage), not kept up
to date on every write: a partition's scan costs about as much as the exchange itself at
the sizes this store is measured at. A tree served to peers is cached for TREE_CACHE_S, so
the three requests of one exchange scan once; a stale cached tree costs a needless segment
exchange (merges are idempotent) or delays a repair to the next round, never loses data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kvstore.core.antientropy import (
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

    def segment_records(
        self, partition: int, segments: Sequence[int]
    ) -> list[tuple[bytes, KeyState]]:
        ring = self.node.require_ring()
        _check_partition(ring, partition)
        wanted = set(segments)
        low, high = partition_range(ring, partition)
        bits = partition_bits(ring)
        return [
            (key, decode_record(raw))
            for dk, key, raw in self.node.storage.scan(low, high)
            if segment_of(position_of(dk), bits) in wanted
        ]

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
        theirs = dict(await node.peers.segment_records(peer, partition, segments, timeout))
        mine = dict(self.segment_records(partition, segments))
        pulled = [(k, s) for k, s in theirs.items() if mine.get(k) != s]
        node.storage.merge_many(pulled)
        push = []
        for key in mine.keys() | theirs.keys():
            merged = node.storage.get(key)
            if merged is not None and merged != theirs.get(key):
                push.append((key, merged))
        if push:
            await node.peers.merge_batch(peer, push, timeout)
        different = len(mine.keys() | theirs.keys()) - sum(
            1 for k in mine.keys() & theirs.keys() if mine[k] == theirs[k]
        )
        node.counters["ae_segments_repaired"] += len(segments)
        node.counters["ae_keys_repaired"] += different
        return different

    async def run(self) -> None:
        interval = self.node.background.anti_entropy_interval_ms / 1000
        await run_every(interval, self.round, "anti-entropy")


def _check_partition(ring: Ring, partition: int) -> None:
    if not 0 <= partition < ring.partitions:
        raise InvalidArgument(f"partition must be in 0..{ring.partitions - 1}, got {partition}")

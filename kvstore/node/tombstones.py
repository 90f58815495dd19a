"""Tombstone GC: each node, for the partitions it is the first primary of, purges tombstones
past their grace period that every primary holds identically (kvstore.core.tombstones).
Each primary deletes its record only if it is still that tombstone, so a write racing the
purge survives. Nothing runs while a ring change is pending."""

from __future__ import annotations

import asyncio
import logging
import time

from kvstore.core.limits import TIMEOUT_MS_CEILING
from kvstore.core.tombstones import expired_tombstone, purgeable
from kvstore.node.antientropy import partition_range
from kvstore.node.app import Node
from kvstore.node.periodic import run_every
from kvstore.rpc.peer import PeerFailure
from kvstore.storage.codec import decode_record

log = logging.getLogger(__name__)

# How long a replica remembers a tombstone it purged (Storage.purge_tombstone): longer than
# any request may last, so a copy of an older version that was in flight at the purge (read
# by an anti-entropy exchange, a handoff page, a repair) can no longer arrive.
PURGE_MEMORY_MS = 2 * TIMEOUT_MS_CEILING

# Tombstones examined per round, so one round's work stays bounded.
ROUND_LIMIT = 1_000
YIELD_EVERY = 256


class TombstoneGC:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def round(self) -> int:
        """One pass; returns the number of keys purged (on every primary)."""
        node = self.node
        now_ms = time.time_ns() // 1_000_000
        node.storage.forget_purges(now_ms - PURGE_MEMORY_MS)
        ring = node.ring
        if ring is None or node.pending_ring is not None:
            return 0
        grace_ms = node.background.tombstone_grace_s * 1000
        timeout = node.limits.request_timeout_ms / 1000
        purged = examined = 0
        for partition in range(ring.partitions):
            primaries = ring.partition_primaries(partition)
            if primaries[0] != node.address:
                continue
            others = primaries[1:]
            low, high = partition_range(ring, partition)
            for scanned, (_, key, raw) in enumerate(node.storage.scan(low, high)):
                if scanned % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # a long scan must not stall gossip and requests
                state = decode_record(raw)
                if not expired_tombstone(state, now_ms, grace_ms):
                    continue
                examined += 1
                if examined > ROUND_LIMIT:
                    return purged
                try:
                    replicas = await asyncio.gather(
                        *(node.peers.read(p, key, timeout, data_only=True) for p in others)
                    )
                except PeerFailure:
                    continue  # a replica that does not answer may lack the tombstone
                if not purgeable(state, replicas, now_ms, grace_ms):
                    continue
                try:
                    done = await asyncio.gather(
                        *(node.peers.purge(p, key, state, timeout) for p in others)
                    )
                except PeerFailure as exc:
                    log.info("purging a tombstone failed on a replica (kept here): %s", exc)
                    continue
                # A replica whose record changed meanwhile kept it: keep ours too, so the
                # tombstone is still here to cover what that replica holds.
                if all(done) and node.storage.purge_tombstone(key, state, now_ms):
                    purged += 1
        node.counters["tombstones_purged"] += purged
        return purged

    async def run(self) -> None:
        interval = self.node.background.tombstone_gc_interval_ms / 1000
        await run_every(interval, self.round, "tombstone gc")

"""Tombstone GC: each node, for the partitions it is the first primary of, purges tombstones
past their grace period that every primary holds identically (kvstore.core.tombstones).
Each primary deletes its record only if it is still that tombstone, so a write racing the
purge survives. Nothing runs while a ring change is pending."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from kvstore.core.limits import TIMEOUT_MS_CEILING
from kvstore.core.partitions import partition_range
from kvstore.core.tombstones import expired_tombstone, purgeable
from kvstore.core.transport import PeerFailure, PeerTransport
from kvstore.node.clock import Clock
from kvstore.node.periodic import run_every
from kvstore.node.router import Router
from kvstore.storage.codec import decode_record
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

# How long a replica remembers a tombstone it purged (Storage.purge_tombstone): longer than
# any request may last, so a copy of an older version that was in flight at the purge (read
# by an anti-entropy exchange, a handoff page, a repair) can no longer arrive.
PURGE_MEMORY_MS = 2 * TIMEOUT_MS_CEILING

# Tombstones examined per round, so one round's work stays bounded.
ROUND_LIMIT = 1_000
YIELD_EVERY = 256


class TombstoneGC:
    def __init__(
        self,
        address: str,
        router: Router,
        storage: Storage,
        transport: PeerTransport,
        clock: Clock,
        counters: Counter[str],
        grace_s: int,
        timeout_ms: int,
        interval_ms: int,
    ) -> None:
        self.address = address
        self._router = router
        self._storage = storage
        self._transport = transport
        self._clock = clock
        self._counters = counters
        self._grace_ms = grace_s * 1000
        self._timeout_s = timeout_ms / 1000
        self._interval_s = interval_ms / 1000

    async def round(self) -> int:
        """One pass; returns the number of keys purged (on every primary)."""
        storage = self._storage
        transport = self._transport
        now_ms = self._clock.wall_ms()
        storage.forget_purges(now_ms - PURGE_MEMORY_MS)
        ring = self._router.ring
        if ring is None or self._router.pending_ring is not None:
            return 0
        grace_ms = self._grace_ms
        timeout = self._timeout_s
        purged = examined = 0
        for partition in range(ring.partitions):
            primaries = ring.partition_primaries(partition)
            if primaries[0] != self.address:
                continue
            others = primaries[1:]
            low, high = partition_range(ring, partition)
            for scanned, (_, key, raw) in enumerate(storage.scan(low, high)):
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
                        *(transport.read(p, key, timeout, data_only=True) for p in others)
                    )
                except PeerFailure:
                    continue  # a replica that does not answer may lack the tombstone
                if not purgeable(state, replicas, now_ms, grace_ms):
                    continue
                try:
                    done = await asyncio.gather(
                        *(transport.purge(p, key, state, timeout) for p in others)
                    )
                except PeerFailure as exc:
                    log.info("purging a tombstone failed on a replica (kept here): %s", exc)
                    continue
                # A replica whose record changed meanwhile kept it: keep ours too, so the
                # tombstone is still here to cover what that replica holds.
                if all(done) and storage.purge_tombstone(key, state, now_ms):
                    purged += 1
        self._counters["tombstones_purged"] += purged
        return purged

    async def run(self) -> None:
        await run_every(self._clock, self._interval_s, self.round, "tombstone gc")

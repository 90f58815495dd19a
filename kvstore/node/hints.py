"""Hinted handoff, the delivering side: hints this node keeps as a fallback go to their
primaries once the failure detector holds them up, and are deleted only after the primary
acknowledged them (and only if no newer write was merged into the hint meanwhile). A
leaving node passes hints for a primary that is down on to another node, so that it can
finish leaving."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator

from kvstore.core.cluster import MemberStatus
from kvstore.core.membership import Membership
from kvstore.core.transport import PeerFailure, PeerTransport
from kvstore.core.versions import KeyState
from kvstore.node.clock import Clock
from kvstore.node.periodic import run_every
from kvstore.node.router import Router
from kvstore.storage.codec import DecodedHint, encode_record
from kvstore.storage.engine import Storage
from kvstore.storage.paging import PAGE_BYTES, RECORD_FRAMING_BYTES

log = logging.getLogger(__name__)

# Per round: hints looked at (bounds the scan) and hints sent to one target in one call.
SCAN_LIMIT = 20_000
BATCH = 500


class HintDelivery:
    def __init__(
        self,
        address: str,
        membership: Membership,
        router: Router,
        storage: Storage,
        transport: PeerTransport,
        clock: Clock,
        counters: Counter[str],
        timeout_ms: int,
        max_age_s: int,
        interval_ms: int,
    ) -> None:
        self.address = address
        self._membership = membership
        self._router = router
        self._storage = storage
        self._transport = transport
        self._clock = clock
        self._counters = counters
        self._timeout_s = timeout_ms / 1000
        self._max_age_ms = max_age_s * 1000
        self._interval_s = interval_ms / 1000

    def _destinations(self, hint: DecodedHint) -> list[str]:
        """The hint's primary; or, if it is no longer in the ring (it left), the key's
        primaries now, so what it carried is not lost with it."""
        ring = self._router.ring
        pending = self._router.pending_ring
        if ring is None:
            return []
        if hint.target in ring.members or (pending and hint.target in pending.members):
            return [hint.target]
        return ring.primaries(hint.key)

    async def round(self) -> int:
        """One pass; returns how many hints were delivered."""
        storage = self._storage
        now_ms = self._clock.wall_ms()
        batches: dict[tuple[str, ...], list[DecodedHint]] = {}
        # A leaving node cannot wait for a dead primary: it hands such hints to another node.
        leaving = self._membership.me.status is MemberStatus.LEAVING
        stranded: list[DecodedHint] = []
        for examined, hint in enumerate(storage.hints()):
            if examined >= SCAN_LIMIT:
                break
            if now_ms - hint.stored_ms > self._max_age_ms:
                if storage.delete_hint(hint):
                    self._counters["hints_dropped"] += 1
                    log.warning("dropped a hint for %s older than hint_max_age_s", hint.target)
                continue
            targets = tuple(self._destinations(hint))
            if targets and all(self._router.is_up(t) for t in targets):  # is_up(self) is True
                batch = batches.setdefault(targets, [])
                if len(batch) < BATCH:
                    batch.append(hint)
            elif leaving and len(stranded) < BATCH:
                stranded.append(hint)
        delivered = 0
        timeout = self._timeout_s
        for targets, held in batches.items():
            # Page by page, each on its own: a page that fails (a record the target's frame
            # cannot take, the target gone mid-way) holds back only its own hints.
            for hints in _pages(held):
                items: list[tuple[bytes, KeyState]] = [(h.key, h.state) for h in hints]
                if self.address in targets:  # this node is now a primary of the keys itself
                    storage.merge_many(items)
                others = [t for t in targets if t != self.address]
                try:
                    await asyncio.gather(
                        *(self._transport.merge_batch(t, items, timeout) for t in others)
                    )
                except PeerFailure as exc:
                    self._counters["hint_pages_failed"] += 1
                    log.info("hint delivery to %s failed: %s", ", ".join(targets), exc)
                    continue
                for hint in hints:
                    if storage.delete_hint(hint):
                        delivered += 1
        self._counters["hints_delivered"] += delivered
        for hint in stranded:
            await self._pass_on(hint, timeout)
        return delivered

    async def _pass_on(self, hint: DecodedHint, timeout: float) -> None:
        """Give a hint whose primary is down to the first node of the key's preference list
        that is up (not this one, not the primary), as a hint for the same primary; then
        delete it here if unchanged."""
        ring = self._router.ring
        if ring is None:
            return
        for entry in ring.preference_list(hint.key):
            holder = entry.member
            if holder in (self.address, hint.target) or not self._router.is_up(holder):
                continue
            try:
                await self._transport.merge(
                    holder, hint.key, encode_record(hint.state), timeout, hint_for=hint.target
                )
            except PeerFailure as exc:
                log.info("passing a hint for %s on to %s failed: %s", hint.target, holder, exc)
                return
            if self._storage.delete_hint(hint):
                self._counters["hints_passed_on"] += 1
            return

    async def run(self) -> None:
        await run_every(self._clock, self._interval_s, self.round, "hint delivery")


def _pages(hints: list[DecodedHint]) -> Iterator[list[DecodedHint]]:
    """Hints in pages of at most PAGE_BYTES of records (at least one hint each)."""
    page: list[DecodedHint] = []
    size = 0
    for hint in hints:
        cost = len(hint.key) + len(encode_record(hint.state)) + RECORD_FRAMING_BYTES
        if page and size + cost > PAGE_BYTES:
            yield page
            page, size = [], 0
        page.append(hint)
        size += cost
    if page:
        yield page

"""Hint delivery as a leaving node does it: a hint for a primary that is down is passed on to
another node of the key's preference list (as a hint for the same primary), so the leaver
can finish; a node that is not leaving keeps it until the primary is up."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from kvstore.core.cluster import MemberStatus
from kvstore.core.ring import Ring
from kvstore.core.transport import PeerFailure
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, write
from kvstore.node.clock import SystemClock
from kvstore.node.hints import HintDelivery
from kvstore.storage.engine import Storage

ME, DEAD, UP_A, UP_B = "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"
MAX_BYTES = 1 << 20


@dataclass
class FakePeers:
    """Records hinted merges; fails calls to the addresses in `failing`."""

    failing: set[str] = field(default_factory=set)
    merged: list[tuple[str, bytes, str | None]] = field(default_factory=list)

    async def merge(
        self, address: str, key: bytes, record: bytes, timeout: float, hint_for: str = ""
    ) -> None:
        if address in self.failing:
            raise PeerFailure("UNAVAILABLE", "UNAVAILABLE")
        self.merged.append((address, key, hint_for))

    async def merge_batch(self, address: str, items: object, timeout: float) -> None:
        raise AssertionError("nothing is deliverable: the only hint's primary is down")


RING = Ring([ME, DEAD, UP_A, UP_B], partitions=8, n=3)


def delivery(
    storage: Storage, status: MemberStatus, peers: FakePeers, counters: Counter[str]
) -> HintDelivery:
    """Hint delivery with exactly the parts it uses: a router (ring, who is up), this
    node's member status, its storage, the transport and the counters."""
    router = SimpleNamespace(ring=RING, pending_ring=None, is_up=lambda a: a != DEAD)
    membership = SimpleNamespace(me=SimpleNamespace(status=status))
    return HintDelivery(
        ME,
        cast(Any, membership),
        cast(Any, router),
        storage,
        peers,  # type: ignore[arg-type]
        SystemClock(),
        counters,
        timeout_ms=1000,
        max_age_s=3600,
        interval_ms=1000,
    )


def hint_for_dead(storage: Storage) -> bytes:
    """Store a hint for DEAD under a key DEAD is a primary of; returns the key."""
    key = next(k for k in (f"key-{i}".encode() for i in range(1000)) if DEAD in RING.primaries(k))
    state, _ = write(EMPTY, EMPTY_CLOCK, "a/1", b"v", timestamp_ms=1)
    storage.store_hint(DEAD, key, state, time.time_ns() // 1_000_000, MAX_BYTES)
    return key


def test_a_leaving_node_passes_a_hint_for_a_dead_primary_on(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db")
    key = hint_for_dead(storage)
    peers = FakePeers()
    counters: Counter[str] = Counter()
    hints = delivery(storage, MemberStatus.LEAVING, peers, counters)
    assert asyncio.run(hints.round()) == 0  # nothing delivered to DEAD...
    holder = next(e.member for e in RING.preference_list(key) if e.member not in (ME, DEAD))
    assert peers.merged == [(holder, key, DEAD)]  # ...but handed on, still for DEAD
    assert storage.hint_count == 0
    assert counters["hints_passed_on"] == 1


def test_a_failed_pass_on_keeps_the_hint(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db")
    hint_for_dead(storage)
    peers = FakePeers(failing={UP_A, UP_B})
    counters: Counter[str] = Counter()
    asyncio.run(delivery(storage, MemberStatus.LEAVING, peers, counters).round())
    assert storage.hint_count == 1
    assert counters["hints_passed_on"] == 0


@pytest.mark.parametrize("status", [MemberStatus.ACTIVE, MemberStatus.JOINING])
def test_a_node_that_stays_keeps_the_hint_for_its_primary(
    tmp_path: Path, status: MemberStatus
) -> None:
    storage = Storage(tmp_path / "db")
    hint_for_dead(storage)
    peers = FakePeers()
    asyncio.run(delivery(storage, status, peers, Counter()).round())
    assert peers.merged == []
    assert storage.hint_count == 1


@dataclass
class PagePeers(FakePeers):
    """Takes every page but one holding `poison` (a record the target cannot take)."""

    poison: bytes = b""
    pages: list[list[bytes]] = field(default_factory=list)

    async def merge_batch(self, address: str, items: object, timeout: float) -> None:
        keys = [key for key, _ in cast(list[tuple[bytes, Any]], items)]
        if self.poison in keys:
            raise PeerFailure("RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED")
        self.pages.append(keys)


def test_one_hint_that_cannot_be_delivered_does_not_hold_back_the_others(
    tmp_path: Path,
) -> None:
    storage = Storage(tmp_path / "db")
    now = time.time_ns() // 1_000_000
    big, _ = write(EMPTY, EMPTY_CLOCK, "a/1", b"x" * 700_000, timestamp_ms=1)
    small, _ = write(EMPTY, EMPTY_CLOCK, "a/1", b"v", timestamp_ms=1)
    keys = [k for k in (f"key-{i}".encode() for i in range(1000)) if UP_A in RING.primaries(k)]
    poison, others = keys[0], keys[1:4]
    storage.store_hint(UP_A, poison, big, now, 8 * MAX_BYTES)
    for key in others:
        storage.store_hint(UP_A, key, big, now, 8 * MAX_BYTES)
    storage.store_hint(UP_A, keys[4], small, now, 8 * MAX_BYTES)
    peers = PagePeers(poison=poison)
    counters: Counter[str] = Counter()
    delivered = asyncio.run(delivery(storage, MemberStatus.ACTIVE, peers, counters).round())
    assert delivered == 4 and storage.hint_count == 1  # all but the poisoned page
    assert counters["hint_pages_failed"] == 1
    assert all(len(page) <= 2 for page in peers.pages)  # pages of at most 1 MiB of records

"""Join and leave under a write load, with real processes: ownership moves partition by
partition, reads and writes keep working, and afterwards every key sits on exactly its N
primaries of the new ring, with no acknowledged write lost."""

from __future__ import annotations

import threading
import time

import pytest

from kvstore import Client
from kvstore.core.cluster import RingLayout
from kvstore.core.ring import Ring, initial_layout, reclaim
from kvstore.errors import KvError
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import ClusterFactory
from tests.integration.test_availability import FAST, assert_nothing_lost, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 64
N = 3


class Writer:
    """Writes new keys through `seeds` until stopped (bounded in count and time), keeping
    every acknowledged one; failed writes are counted, not kept."""

    def __init__(self, seeds: list[str], prefix: str, limit: int = 5_000) -> None:
        self.acknowledged: dict[str, bytes] = {}
        self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(seeds, prefix, limit))

    def _run(self, seeds: list[str], prefix: str, limit: int) -> None:
        deadline = time.monotonic() + 120
        with Client(seeds, timeout=5.0) as kv:
            for i in range(limit):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                key, value = f"{prefix}-{i}", f"{prefix}-v{i}".encode()
                try:
                    kv.put(key, value)
                    self.acknowledged[key] = value
                except KvError as exc:
                    self.failed += 1
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def committed(kv: Client, nodes: list[str], members: list[str]) -> bool:
    """Every node routes by a ring of exactly `members`, with nothing pending."""
    for node in nodes:
        status = kv.status(node)
        owners = {m.address for m in status.members if m.partitions_owned}
        if status.ring_pending or owners != set(members):
            return False
    return True


def exactly_on_primaries(
    kv: Client, ring: Ring, nodes: list[str], keys: dict[str, bytes]
) -> list[str]:
    """Keys not held by exactly their N primaries (checked with LocalGet on every node)."""
    wrong = []
    for key, value in keys.items():
        holders = {n for n in nodes if value in kv.local_get(n, key).values}
        if holders != set(ring.primaries(key.encode())):
            wrong.append(key)
    return wrong


def next_ring(layout: RingLayout, members: list[str]) -> tuple[RingLayout, Ring]:
    """The ring the claimant commits: the reclaim is deterministic, so the test computes it."""
    after = reclaim(layout, sorted(members), N)
    return after, Ring.from_layout(after, N)


def test_a_node_joins_then_one_leaves_under_writes(make_cluster: ClusterFactory) -> None:
    cluster: LocalCluster = make_cluster(4, (*FAST, "--anti-entropy-interval-ms", "0"), founders=3)
    founders, newcomer = cluster.addresses[:3], cluster.addresses[3]
    everyone = cluster.addresses
    with Client(founders, timeout=5.0) as kv:
        status = kv.status(newcomer)
        wait_for("the newcomer learns the ring", lambda: kv.status(newcomer).ring_epoch >= 1, 15)
        status = kv.status(newcomer)
        me = next(m for m in status.members if m.address == newcomer)
        assert (me.status, me.partitions_owned) == ("standby", 0)
        preload = {f"pre-{i}": f"pre-v{i}".encode() for i in range(300)}
        for key, value in preload.items():
            kv.put(key, value)

        # ---- join ----
        with Writer(founders, "join") as writer:
            time.sleep(1.0)
            kv.join(newcomer)
            took = wait_for("the join is committed", lambda: committed(kv, everyone, everyone), 60)
            time.sleep(1.0)
        assert writer.failed == 0, f"join: {writer.failed} writes failed: {writer.errors}"
        print(f"join committed in {took:.1f} s with {len(writer.acknowledged)} writes during it")
        layout, ring = next_ring(initial_layout(sorted(founders), PARTITIONS, N), everyone)
        written = {**preload, **writer.acknowledged}
        wait_for(
            "every key on exactly its primaries after the join",
            lambda: not exactly_on_primaries(kv, ring, everyone, written),
            60,
            interval=1.0,
        )
        assert_nothing_lost(kv, written)

        # ---- leave ----
        leaver = founders[0]
        remaining = [a for a in everyone if a != leaver]
        with Writer(remaining, "leave") as writer:
            time.sleep(1.0)
            kv.leave(leaver)
            took = wait_for(
                "the leave is committed", lambda: committed(kv, remaining, remaining), 60
            )
            time.sleep(1.0)
        assert writer.failed == 0, f"leave: {writer.failed} writes failed: {writer.errors}"
        print(f"leave committed in {took:.1f} s with {len(writer.acknowledged)} writes during it")
        _, ring = next_ring(layout, remaining)
        written.update(writer.acknowledged)
        wait_for(
            "every key on exactly its primaries after the leave (none on the leaver)",
            lambda: not exactly_on_primaries(kv, ring, everyone, written),
            60,
            interval=1.0,
        )
        left = next(m for m in kv.status(leaver).members if m.address == leaver)
        assert left.status == "left"
    with Client(remaining, timeout=5.0) as kv:
        assert_nothing_lost(kv, written)

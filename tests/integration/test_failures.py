"""Killed nodes: quorums that still hold, quorums that cannot, and durability across kill -9."""

from __future__ import annotations

import asyncio
import time

import pytest

from kvstore import AsyncClient, Client
from kvstore.errors import Unavailable
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration


def test_one_node_killed_quorum_of_two_still_serves(make_cluster: ClusterFactory) -> None:
    # No anti-entropy: what the restarted node holds of "kept" can only be its own (the WAL).
    cluster = make_cluster(3, ("--anti-entropy-interval-ms", "0"))
    with Client(cluster.seeds, timeout=3.0) as kv:
        before = kv.put("survivor", b"v0", w=3)  # on every replica before the kill
        kv.put("kept", b"k0", w=3)  # ... and never written again
        cluster.kill_node(2)

        for i in range(20):  # every coordinator order, some starting at the dead node
            kv.put(f"during-{i}", f"{i}".encode(), w=2)
            assert kv.get(f"during-{i}", r=2).values == [f"{i}".encode()]
        kv.put("survivor", b"v1", context=before.context)
        assert kv.get("survivor").values == [b"v1"]

        with pytest.raises(Unavailable) as write_all:
            kv.put("needs-three", b"v", w=3)
        # The coordinator gives up as soon as 3 acks are out of reach, or at the deadline if
        # the dead replica is not yet known dead (a replica call waits for a connection
        # coming back): 1 or 2 answered, and the dead one is named, failed or silent.
        assert write_all.value.required == 3
        assert write_all.value.answered in (1, 2)
        assert "of 3 required replicas answered" in str(write_all.value)
        assert cluster.addresses[2] in str(write_all.value)
        with pytest.raises(Unavailable) as read_all:
            kv.get("survivor", r=3)
        assert read_all.value.required == 3

        cluster.start_node(2)
        # Peers reconnect within their backoff (at most 2 s); then W=3 works again.
        # A failed attempt may be stored on some replicas, so each attempt uses its own key.
        deadline = time.monotonic() + 10
        for attempt in range(100):
            try:
                kv.put(f"after-restart-{attempt}", b"v", w=3)
                break
            except Unavailable:
                assert time.monotonic() < deadline, "W=3 still failing 10 s after the restart"
                time.sleep(0.2)
        assert kv.local_get(cluster.addresses[2], f"after-restart-{attempt}").values == [b"v"]
        # It kept what it had before the kill (the WAL). ("survivor" is no witness: the read
        # repair of the r=3 get above, waiting for the node, may bring it v1 first.)
        assert kv.local_get(cluster.addresses[2], "kept").values == [b"k0"]


def test_two_nodes_killed_quorum_of_two_fails(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    with Client(cluster.client_addresses[0], timeout=2.0) as kv:
        cluster.kill_node(1)
        cluster.kill_node(2)
        with pytest.raises(Unavailable) as failed:
            kv.put("lonely", b"v")
        assert (failed.value.answered, failed.value.required) == (1, 2)
        # The failed put may still be stored on the one live replica (Dynamo semantics),
        # so a later blind put adds a sibling next to it.
        kv.put("lonely", b"w", w=1)
        assert b"w" in kv.get("lonely", r=1).values


def test_acknowledged_writes_survive_kill_9_of_every_node(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    count = 1000

    async def write_all() -> None:
        async with AsyncClient(cluster.seeds, timeout=10.0) as kv:
            semaphore = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with semaphore:
                    await kv.put(f"durable-{i}", f"value-{i}".encode())

            await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(write_all())  # returns only when all 1,000 puts were acknowledged
    for index in range(3):
        cluster.kill_node(index)
    cluster.start()

    async def read_all() -> list[list[bytes]]:
        async with AsyncClient(cluster.seeds, timeout=10.0) as kv:
            semaphore = asyncio.Semaphore(32)

            async def one(i: int) -> list[bytes]:
                async with semaphore:
                    return (await kv.get(f"durable-{i}")).values

            return await asyncio.gather(*(one(i) for i in range(count)))

    values = asyncio.run(read_all())
    missing = [i for i, v in enumerate(values) if v != [f"value-{i}".encode()]]
    assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:10]}"


def test_non_replica_forwards_the_write_to_a_replica(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, extra_args=("--n", "2", "--r", "1", "--w", "2"))
    from kvstore.core.ring import Ring

    ring = Ring(cluster.addresses, 256, 2)
    outsider = cluster.addresses[0]
    key = next(
        f"fwd-{i}" for i in range(1000) if outsider not in ring.primaries(f"fwd-{i}".encode())
    )
    with Client(cluster.client_of(outsider)) as kv:
        kv.put(key, b"forwarded")
        assert kv.get(key).values == [b"forwarded"]
        assert kv.local_get(outsider, key).found is False
        for primary in ring.primaries(key.encode()):
            assert kv.local_get(primary, key).values == [b"forwarded"]

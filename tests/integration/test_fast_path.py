"""The fast path against real nodes: the batch API (per-item results and errors, limits),
calls multiplexed on one stream per node, group commit seen from outside (one WriteBatch for
many writes) and surviving kill -9 with and without sync_writes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore import AsyncClient, Client
from kvstore.client.results import GetResult, PutItem, PutResult
from kvstore.errors import (
    BatchTooLarge,
    InvalidContext,
    InvalidKey,
    InvalidOption,
    KvError,
    ValueTooLarge,
)
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[LocalCluster]:
    from tests.conftest import free_ports

    with LocalCluster(
        3,
        tmp_path_factory.mktemp("fast"),
        ports=free_ports(3),
        extra_args=("--max-value-bytes", "1000", "--max-batch-items", "50"),
        tls_dir=tls_dir,
    ) as started:
        started.start()
        yield started


@pytest.fixture
def kv(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.seeds, timeout=5.0) as client:
        yield client


def counters(kv: Client, address: str) -> dict[str, int]:
    return dict(kv.status(address).counters)


# ---- the batch API ----


def test_put_many_then_get_many_answer_per_key_in_order(kv: Client) -> None:
    keys = [f"batch-{i}" for i in range(40)]
    written = kv.put_many([(key, key.encode()) for key in keys])
    assert all(isinstance(item, PutResult) and item.context for item in written)
    read = kv.get_many([*keys, "batch-missing"])
    assert [item.values for item in read if isinstance(item, GetResult)] == [
        *([key.encode()] for key in keys),
        [],
    ]
    assert isinstance(read[-1], GetResult) and not read[-1].found


def test_a_bad_item_fails_alone(kv: Client) -> None:
    written = kv.put_many(
        [
            ("good-1", b"a"),
            (b"x" * 2000, b"key too long"),
            ("good-2", b"b"),
            ("too-big", b"v" * 1001),
            ("bad-context", b"c", b"not a context"),
            ("good-3", b"c"),
        ]
    )
    kinds = [type(item) for item in written]
    assert kinds == [PutResult, InvalidKey, PutResult, ValueTooLarge, InvalidContext, PutResult]
    read = kv.get_many(["good-1", "good-2", "too-big", "bad-context", "good-3"])
    assert [item.values for item in read if isinstance(item, GetResult)] == [
        [b"a"],
        [b"b"],
        [],
        [],
        [b"c"],
    ]
    # An empty key fails on the client, before anything is sent: the whole call.
    with pytest.raises(InvalidKey):
        kv.get_many(["good-1", ""])


def test_each_item_carries_its_own_context(kv: Client) -> None:
    first = kv.put_many([("ctx-a", b"a1"), ("ctx-b", b"b1")])
    assert all(isinstance(item, PutResult) for item in first)
    contexts = [item.context for item in first if isinstance(item, PutResult)]
    # ctx-a replaces what its context saw; ctx-b is written blind: a sibling.
    second = kv.put_many([PutItem("ctx-a", b"a2", contexts[0]), PutItem("ctx-b", b"b2")])
    assert all(isinstance(item, PutResult) for item in second)
    read = kv.get_many(["ctx-a", "ctx-b"])
    assert isinstance(read[0], GetResult) and read[0].values == [b"a2"]
    assert isinstance(read[1], GetResult) and sorted(read[1].values) == [b"b1", b"b2"]
    deleted = kv.delete_many([("ctx-a", read[0].context), ("ctx-b", read[1].context)])
    assert all(isinstance(item, PutResult) for item in deleted)
    assert [
        item.found for item in kv.get_many(["ctx-a", "ctx-b"]) if isinstance(item, GetResult)
    ] == [
        False,
        False,
    ]


def test_a_batch_past_the_limit_is_refused_whole(kv: Client) -> None:
    with pytest.raises(BatchTooLarge):
        kv.put_many([(f"over-{i}", b"v") for i in range(51)])
    with pytest.raises(BatchTooLarge):
        kv.get_many([f"over-{i}" for i in range(51)])
    # Nothing of the refused batch was written.
    assert not any(
        isinstance(item, GetResult) and item.found
        for item in kv.get_many([f"over-{i}" for i in range(50)])
    )
    with pytest.raises(InvalidOption):
        kv.put_many([("w-too-big", b"v")], w=4)
    assert kv.put_many([]) == [] and kv.get_many([]) == []


def test_the_writes_of_a_batch_commit_together(kv: Client, cluster: LocalCluster) -> None:
    before = {address: counters(kv, address) for address in cluster.addresses}
    written = kv.put_many([(f"together-{i}", b"v") for i in range(50)], w=3)
    assert all(isinstance(item, PutResult) for item in written)
    for address in cluster.addresses:  # N=3 of 3 nodes: every node holds every key
        after = counters(kv, address)
        writes = after["group_commit_writes"] - before[address].get("group_commit_writes", 0)
        commits = after["group_commits"] - before[address].get("group_commits", 0)
        assert writes >= 50
        assert commits <= 10, f"{address}: {commits} commits for {writes} writes"


def test_the_async_client_has_the_same_batch_api(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster.seeds) as kv:
            written = await kv.put_many([("async-1", b"1"), ("async-2", b"2")])
            assert all(isinstance(item, PutResult) for item in written)
            read = await kv.get_many(["async-1", "async-2"])
            assert [i.values for i in read if isinstance(i, GetResult)] == [[b"1"], [b"2"]]
            keys = ["async-1", "async-2"]
            contexts = [(key, i.context) for key, i in zip(keys, read, strict=True)
                        if isinstance(i, GetResult)]  # fmt: skip
            assert all(isinstance(i, PutResult) for i in await kv.delete_many(contexts))

    asyncio.run(scenario())


# ---- one stream per node ----


def test_concurrent_calls_share_one_stream_and_leave_together(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        # One node, not routed by the ring: every call on that node's one stream.
        async with AsyncClient(cluster.client_addresses[0], route_by_ring=False) as kv:
            await kv.put("warm", b"1")
            stream = kv.stream(cluster.client_addresses[0])
            calls, messages = stream.calls_sent, stream.messages_sent
            results = await asyncio.gather(*(kv.put(f"shared-{i}", b"v") for i in range(100)))
            assert len(results) == 100
            assert stream.calls_sent - calls == 100
            assert stream.messages_sent - messages < 10
            assert stream.streams_opened == 1

    asyncio.run(scenario())


def test_the_sync_client_serves_many_threads(kv: Client) -> None:
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                kv.put(f"thread-{n}-{i}", f"{n}-{i}".encode())
                assert kv.get(f"thread-{n}-{i}").values == [f"{n}-{i}".encode()]
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []


def test_a_node_that_cannot_be_reached_is_passed_over(cluster: LocalCluster) -> None:
    from tests.conftest import free_ports

    nowhere = f"127.0.0.1:{free_ports(1)[0]}"
    with Client([nowhere, *cluster.client_addresses], timeout=3.0) as kv:
        for i in range(6):  # the rotation starts at the dead address every third call
            kv.put(f"passed-over-{i}", b"v")
            assert kv.get(f"passed-over-{i}").values == [b"v"]


# ---- group commit survives kill -9 ----


@pytest.mark.parametrize("sync", [False, True], ids=["wal", "sync_writes"])
def test_acknowledged_batches_and_puts_survive_kill_9_mid_write(
    make_cluster: ClusterFactory, sync: bool
) -> None:
    """Every node is killed while batches and puts are in flight: each write acknowledged
    before (or as) the nodes died is there after the restart; the ones cut off are not
    counted (their outcome is unknown)."""
    cluster = make_cluster(3, extra_args=("--sync-writes",) if sync else ())

    async def write_until_killed() -> list[str]:
        acknowledged: list[str] = []
        stop = asyncio.Event()
        async with AsyncClient(cluster.seeds, timeout=3.0) as kv:

            async def batches(writer: int) -> None:
                for b in range(10_000):
                    if stop.is_set():
                        return
                    keys = [f"b{writer}-{b}-{i}" for i in range(25)]
                    try:
                        items = await kv.put_many([(key, key.encode()) for key in keys])
                    except KvError:
                        continue
                    acknowledged.extend(k for k, i in zip(keys, items, strict=True)
                                        if isinstance(i, PutResult))  # fmt: skip

            async def singles(writer: int) -> None:
                for n in range(100_000):
                    if stop.is_set():
                        return
                    key = f"s{writer}-{n}"
                    try:
                        await kv.put(key, key.encode())
                    except KvError:
                        continue
                    acknowledged.append(key)

            workers = [asyncio.ensure_future(batches(w)) for w in range(4)]
            workers += [asyncio.ensure_future(singles(w)) for w in range(16)]
            loop = asyncio.get_running_loop()
            give_up = loop.time() + 60
            while len(acknowledged) < 600 and loop.time() < give_up:
                await asyncio.sleep(0.01)
            for index in range(3):  # writes are in flight: kill -9 under them
                cluster.kill_node(index)
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
        return acknowledged

    acknowledged = asyncio.run(write_until_killed())
    assert len(acknowledged) >= 600
    cluster.start()

    async def read_all() -> list[str]:
        async with AsyncClient(cluster.seeds, timeout=10.0) as kv:
            lost: list[str] = []
            for start in range(0, len(acknowledged), 50):
                keys = acknowledged[start : start + 50]
                for key, item in zip(keys, await kv.get_many(keys, r=2), strict=True):
                    if isinstance(item, KvError) or item.values != [key.encode()]:
                        lost.append(key)
            return lost

    lost = asyncio.run(read_all())
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:10]}"

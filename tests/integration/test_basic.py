"""Round trips, siblings and limits against a real 3-node cluster."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from kvstore import AsyncClient, Client
from kvstore.errors import InvalidContext, InvalidKey, InvalidOption, ValueTooLarge
from kvstore.node.local_cluster import LocalCluster

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(6).hex()}"


def wait_on_every_replica(cluster: LocalCluster, key: str, expected: list[bytes]) -> None:
    """Replication beyond W finishes in the background: poll, bounded, until all N agree."""
    with Client(cluster.seeds) as kv:
        deadline = time.monotonic() + 5
        while True:
            seen = {a: sorted(kv.local_get(a, key).values) for a in cluster.addresses}
            if all(values == sorted(expected) for values in seen.values()):
                return
            assert time.monotonic() < deadline, f"replicas did not converge: {seen}"
            time.sleep(0.05)


def test_put_get_delete_round_trip(cluster: LocalCluster, client: Client) -> None:
    key = unique("round")
    assert client.get(key).found is False
    put = client.put(key, b"v1")
    got = client.get(key)
    assert got.found and got.values == [b"v1"] and got.context == put.context
    assert got.value == b"v1"

    client.put(key, b"v2", context=got.context)
    got = client.get(key)
    assert got.values == [b"v2"]
    wait_on_every_replica(cluster, key, [b"v2"])

    client.delete(key, context=got.context)
    gone = client.get(key)
    assert gone.found is False and gone.values == []
    # The tombstone's context still covers history: a write with it replaces the tombstone.
    client.put(key, b"v3", context=gone.context)
    assert client.get(key).values == [b"v3"]


def test_str_and_bytes_keys_are_the_same_key(client: Client) -> None:
    key = unique("ü-key")
    client.put(key, b"x")
    assert client.get(key.encode()).values == [b"x"]


def test_async_client_round_trip(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster.seeds) as kv:
            keys = [unique("async") for _ in range(50)]
            await asyncio.gather(*(kv.put(k, k.encode()) for k in keys))
            results = await asyncio.gather(*(kv.get(k) for k in keys))
            assert [r.values for r in results] == [[k.encode()] for k in keys]
            got = await kv.get(keys[0])
            await kv.delete(keys[0], context=got.context)
            assert (await kv.get(keys[0])).found is False
            assert (await kv.local_get(cluster.addresses[0], keys[1])).found in (True, False)

    asyncio.run(scenario())


def test_same_context_through_two_coordinators_gives_siblings(cluster: LocalCluster) -> None:
    key = unique("siblings")
    a, b = cluster.addresses[0], cluster.addresses[1]
    with Client(cluster.client_of(a)) as via_a, Client(cluster.client_of(b)) as via_b:
        via_a.put(key, b"base")
        context = via_a.get(key).context
        via_a.put(key, b"from-a", context=context)
        via_b.put(key, b"from-b", context=context)
        both = via_a.get(key, r=3)
        assert sorted(both.values) == [b"from-a", b"from-b"]

        via_b.put(key, b"resolved", context=both.context)
        assert via_a.get(key, r=3).values == [b"resolved"]
    wait_on_every_replica(cluster, key, [b"resolved"])


def test_same_context_through_one_coordinator_gives_siblings(cluster: LocalCluster) -> None:
    key = unique("one-coordinator")
    with Client(cluster.client_addresses[2]) as kv:
        kv.put(key, b"base")
        context = kv.get(key).context
        kv.put(key, b"x", context=context)
        kv.put(key, b"y", context=context)
        assert sorted(kv.get(key).values) == [b"x", b"y"]


def test_put_without_context_on_existing_key_adds_a_sibling(client: Client) -> None:
    key = unique("blind")
    client.put(key, b"one")
    client.put(key, b"two")
    assert sorted(client.get(key, r=3).values) == [b"one", b"two"]


def test_interleaved_writers_leave_at_most_one_sibling_each(cluster: LocalCluster) -> None:
    """Each writer carries the context of its own last read or its own last put, through its
    own coordinator: siblings never exceed the number of writers (no sibling explosion)."""
    key = unique("interleaved")
    chooser = random.Random(7)
    writers = [Client(address) for address in cluster.client_addresses]
    try:
        contexts: list[bytes | None] = [None] * len(writers)
        for round_ in range(15):
            for i, kv in enumerate(writers):
                if chooser.random() < 0.5:
                    contexts[i] = kv.get(key).context  # last read
                value = f"w{i}-{round_}".encode()
                contexts[i] = kv.put(key, value, context=contexts[i]).context  # last put
                seen = kv.get(key, r=3).values
                assert value in seen
                assert len(seen) <= len(writers), seen
        final = writers[0].get(key, r=3)
        assert 1 <= len(final.values) <= len(writers)
        assert all(v.endswith(b"-14") for v in final.values), final.values
    finally:
        for kv in writers:
            kv.close()


def test_resolver_merges_siblings_on_read(client: Client) -> None:
    key = unique("resolver")
    client.put(key, b"a")
    client.put(key, b"b")
    merged = client.get(key, r=3, resolver=lambda values: b"+".join(sorted(values)))
    assert merged.values == [b"a+b"]
    client.put(key, merged.values[0], context=merged.context)
    assert client.get(key, r=3).values == [b"a+b"]


def test_oversized_key_and_value_rejected_and_nothing_stored(
    cluster: LocalCluster, client: Client
) -> None:
    long_key = b"k" * 1025
    with pytest.raises(InvalidKey):
        client.put(long_key, b"v")
    key = unique("big-value")
    with pytest.raises(ValueTooLarge):
        client.put(key, b"x" * (1024 * 1024 + 1))
    for address in cluster.addresses:
        assert client.local_get(address, key).found is False
        with pytest.raises(InvalidKey):
            client.local_get(address, long_key)
    # The limits are inclusive.
    client.put(b"k" * 1024, b"x" * (1024 * 1024))
    assert client.get(b"k" * 1024).values == [b"x" * (1024 * 1024)]


def test_bad_requests_are_typed_errors_and_store_nothing(
    cluster: LocalCluster, client: Client
) -> None:
    key = unique("bad")
    with pytest.raises(InvalidKey):
        client.put("", b"v")
    with pytest.raises(InvalidContext):
        client.put(key, b"v", context=b"not a context")
    # Another key's context would replace siblings this key's writer never saw.
    other = unique("other")
    client.put(key, b"kept")
    with pytest.raises(InvalidContext, match="another key"):
        client.put(key, b"clobber", context=client.put(other, b"x").context)
    with pytest.raises(InvalidContext):
        client.delete(key, context=client.get(other).context)
    assert client.get(key, r=3).values == [b"kept"]
    key = unique("bad")
    with pytest.raises(InvalidOption):
        client.put(key, b"v", w=4)
    with pytest.raises(InvalidOption):
        client.get(key, r=4)
    with pytest.raises(InvalidOption):
        client.put(key, b"v", w=0)
    for address in cluster.addresses:
        assert client.local_get(address, key).found is False

"""Causal contexts on a real cluster: a writer never drops what it was not shown.

The issue's sequence (x0; B1 and A1 with x0's context; A2 with A1's put context) through one
coordinator, through three, and through a coordinator that missed B1 and A1; return_body;
riak_test's sibling_explosion; and contexts as untrusted input (forged, oversized, or growing
a key's clock past its limit): refused with InvalidContext, nothing stored.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from kvstore import Client
from kvstore._native import hash_key
from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import InvalidContext
from kvstore.node.local_cluster import LocalCluster
from kvstore.storage.codec import MAX_ACTOR_BYTES, MAX_CONTEXT_ENTRIES, decode_context
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(6).hex()}"


def issue_sequence(via_b: Client, via_a1: Client, via_a2: Client, key: str) -> list[bytes]:
    via_b.put(key, b"x0")
    ctx0 = via_b.get(key, r=3).context
    via_b.put(key, b"B1", context=ctx0)  # writer B, acknowledged
    ra = via_a1.put(key, b"A1", context=ctx0)  # writer A, concurrent with B
    via_a2.put(key, b"A2", context=ra.context)  # A again, with what its own put returned
    return sorted(via_a1.get(key, r=3).values)


def test_chaining_put_contexts_through_one_coordinator_keeps_the_unseen_write(
    cluster: LocalCluster,
) -> None:
    with Client(cluster.client_addresses[0]) as kv:
        assert issue_sequence(kv, kv, kv, unique("one")) == [b"A2", b"B1"]


def test_chaining_put_contexts_through_three_coordinators_keeps_the_unseen_write(
    cluster: LocalCluster,
) -> None:
    a, b, c = (Client(address) for address in cluster.client_addresses)
    try:
        assert issue_sequence(a, b, c, unique("three")) == [b"A2", b"B1"]
        assert issue_sequence(c, a, b, unique("three")) == [b"A2", b"B1"]
    finally:
        for kv in (a, b, c):
            kv.close()


def test_a_coordinator_that_missed_both_writes_keeps_the_unseen_one(
    make_cluster: ClusterFactory,
) -> None:
    """A2 goes through a node that holds only x0: its clock must learn that A1 is replaced
    and that B1 is not, or the merge would drop B1 (or bring A1 back)."""
    # No anti-entropy, so the restarted node stays behind until the test reads the key.
    cluster = make_cluster(3, extra_args=("--anti-entropy-interval-ms", "0"))
    key = unique("stale")
    first, second, late = cluster.client_addresses
    # A 1 s deadline: replication to the dead node gives up before it is back (a call to a
    # peer waits for its connection until the request's deadline, and would deliver).
    with (
        Client(first, timeout=1.0) as via_b,
        Client(second, timeout=1.0) as via_a,
        Client(late, timeout=10.0) as via_c,
    ):
        via_b.put(key, b"x0", w=3)
        ctx0 = via_b.get(key, r=3).context
        cluster.kill_node(2)
        via_b.put(key, b"B1", context=ctx0)
        ra = via_a.put(key, b"A1", context=ctx0)
        time.sleep(1.5)
        cluster.start_node(2)
        assert via_c.local_get(cluster.addresses[2], key).values == [b"x0"]  # missed B1, A1
        chained = via_c.put(key, b"A2", context=ra.context)
        # Read through the node that missed the writes (its peers' channels to it may still
        # be reconnecting): r=3 meets every replica, and read repair brings them along.
        assert sorted(via_c.get(key, r=3).values) == [b"A2", b"B1"]
        for address in cluster.addresses:
            assert sorted(via_c.local_get(address, key).values) == [b"A2", b"B1"]
        # The next link of the chain replaces A2 only.
        via_c.put(key, b"A3", context=chained.context)
        assert sorted(via_c.get(key, r=3).values) == [b"A3", b"B1"]


def test_return_body_shows_the_concurrent_write_and_the_resolved_write_keeps_it(
    cluster: LocalCluster,
) -> None:
    key = unique("body")
    a, b = Client(cluster.client_addresses[0]), Client(cluster.client_addresses[1])
    try:
        a.put(key, b"x0")
        ctx0 = a.get(key, r=3).context
        b.put(key, b"B1", context=ctx0)
        ra = a.put(key, b"A1", context=ctx0, return_body=True)
        assert sorted(ra.values) == [b"A1", b"B1"]
        # The context covers exactly the values shown: a put with it replaces both.
        resolved = a.put(key, b"A1+B1", context=ra.context, return_body=True)
        assert resolved.values == [b"A1+B1"]
        assert b.get(key, r=3).values == [b"A1+B1"]
        # Without return_body, nothing comes back but the context.
        plain = a.put(key, b"again", context=resolved.context)
        assert plain.values == [] and plain.context
    finally:
        a.close()
        b.close()


def test_return_body_with_a_resolver_merges_for_the_caller(cluster: LocalCluster) -> None:
    key = unique("resolver")
    join = lambda values: b"+".join(sorted(values))  # noqa: E731
    with (
        Client(cluster.client_addresses[2], resolver=join) as kv,
        Client(cluster.client_addresses[0]) as other,
    ):
        kv.put(key, b"a")
        other.put(key, b"b")  # blind: a sibling
        result = kv.put(key, b"c", return_body=True)  # blind too: three siblings now
        assert result.values == [b"a+b+c"]
        # The per-call resolver wins over the client's.
        mine = kv.put(key, b"d", return_body=True, resolver=lambda values: b"mine")
        assert mine.values == [b"mine"]
        kv.put(key, result.values[0], context=mine.context)
        assert other.get(key, r=3).values == [b"a+b+c"]
    with Client(cluster.seeds) as kv, pytest.raises(Exception, match="return_body"):
        kv.put(key, b"x", return_body="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("coordinators", ["one", "two"])
def test_sibling_explosion(cluster: LocalCluster, coordinators: str) -> None:
    """riak_test's sibling_explosion: two writers interleave fetch / resolve / mutate /
    store on one key for 100 rounds, each resolving what its last put returned (return_body)
    and adding its number. Without exact contexts every write would pile up as a sibling."""
    key = unique("explosion")
    addresses = (
        cluster.client_addresses[:1] * 2 if coordinators == "one" else cluster.client_addresses[:2]
    )
    clients = [Client(address) for address in addresses]
    try:
        # Writer 0 starts with {0}, writer 1 with {1}; neither has a context yet.
        last = [clients[w].put(key, json.dumps([w]).encode(), return_body=True) for w in (0, 1)]
        for number in range(2, 100):
            writer = number % 2
            union = {n for value in last[writer].values for n in json.loads(value)} | {number}
            value = json.dumps(sorted(union)).encode()
            last[writer] = clients[writer].put(
                key, value, context=last[writer].context, return_body=True
            )
            assert len(last[writer].values) <= 2, last[writer].values
        final = clients[0].get(key, r=3).values
        assert len(final) <= 2
        assert {n for value in final for n in json.loads(value)} == set(range(100))
    finally:
        for kv in clients:
            kv.close()


# ---- contexts are untrusted input ----


def forged(key: str, vector: list[tuple[str, int]], holes: list[tuple[str, int]] = ()) -> bytes:
    data: bytes = pb.CausalContext(
        format=2 if holes else 1,
        vector=[pb.VectorEntry(actor=a, counter=c) for a, c in vector],
        holes=[pb.Dot(actor=a, counter=c) for a, c in holes],
        key_position=hash_key(key.encode()),
    ).SerializeToString()
    return data


def replica_views(kv: Client, cluster: LocalCluster, key: str) -> list[tuple[list[bytes], bytes]]:
    return [
        (sorted(view.values), view.context)
        for view in (kv.local_get(address, key) for address in cluster.addresses)
    ]


def test_forged_and_oversized_contexts_are_refused_and_change_nothing(
    cluster: LocalCluster,
) -> None:
    key = unique("forged")
    with Client(cluster.client_addresses[0]) as kv:
        first = kv.put(key, b"kept", w=3)
        # The coordinator's own actor at the top of uint64: the next dot would overflow and
        # every later write of the key through this node would fail for ever.
        (actor,) = decode_context(first.context, key.encode()).vector
        before = replica_views(kv, cluster, key)
        attempts = {
            "counter at 2^64-1": forged(key, [(actor, 2**64 - 1)]),
            "counter past 2^62": forged(key, [("x/1", 2**62 + 1)]),
            "3 KB actor names": forged(key, [(f"{i:04d}" + "n" * 3000, 1) for i in range(2000)]),
            "an actor one byte too long": forged(key, [("n" * (MAX_ACTOR_BYTES + 1), 1)]),
            "too many entries": forged(key, [(f"x{i}", 1) for i in range(MAX_CONTEXT_ENTRIES + 1)]),
            "a hole at the top": forged(key, [(actor, 3)], holes=[(actor, 3)]),
            "a hole outside the vector": forged(key, [(actor, 3)], holes=[("y/1", 1)]),
        }
        for what, context in attempts.items():
            with pytest.raises(InvalidContext):
                kv.put(key, b"forged", context=context)
            assert replica_views(kv, cluster, key) == before, what
        # The key is still readable and writable, with its own context.
        got = kv.get(key, r=3)
        assert got.values == [b"kept"]
        kv.put(key, b"next", context=got.context)
        assert kv.get(key, r=3).values == [b"next"]


def test_contexts_cannot_grow_a_key_clock_past_its_limit(make_cluster: ClusterFactory) -> None:
    """Each forged context is within bounds on its own, but names actors the key never had:
    once the key's clock would pass max_clock_entries, the write is refused."""
    cluster = make_cluster(3, extra_args=("--max-clock-entries", "40"))
    key = unique("growth")
    with Client(cluster.client_addresses[1]) as kv:
        kv.put(key, b"v0", w=3)
        accepted = refused = 0
        for batch in range(5):
            names = [(f"fake-{batch}-{i}/{'f' * 100}", 1) for i in range(15)]
            got = kv.get(key, r=3)
            vector = list(decode_context(got.context, key.encode()).vector.items())
            try:
                kv.put(key, b"v%d" % (batch + 1), context=forged(key, vector + names), w=3)
                accepted += 1
            except InvalidContext as exc:
                assert "max_clock_entries" in str(exc)
                refused += 1
                assert kv.get(key, r=3).values == got.values  # nothing stored
        assert (accepted, refused) == (2, 3)  # 1 + 15 + 15 entries fit in 40; 46 do not
        for _, context in replica_views(kv, cluster, key):
            assert decode_context(context, key.encode()).entries <= 40
        got = kv.get(key, r=3)
        kv.put(key, b"resolved", context=got.context)  # what the key holds is still usable
        assert kv.get(key, r=3).values == [b"resolved"]

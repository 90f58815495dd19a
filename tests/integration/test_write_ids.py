"""Write ids on a real secure 3-node cluster (issue 16): a put retried with the write id of a
first try that was applied is answered, by any coordinator, with the first try's context
and no second sibling; a retry that landed where the first try never arrived makes a twin,
which every node reads as one write once read repair has spread it, and which the next
put replaces together with the first try.

Puts go through the raw KV stub (TLS and the admin token), so the test controls the write
id and the coordinator of each try."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from kvstore import TLS, Client
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client.credentials import channel_credentials
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import ClusterFactory

WRITE_ID = bytes(range(16))


@pytest.fixture
def stubs(cluster: LocalCluster) -> Iterator[list[pb_grpc.KVStub]]:
    yield from _stubs(cluster)


def _stubs(cluster: LocalCluster) -> Iterator[list[pb_grpc.KVStub]]:
    """A KV stub on each node's client port, in the order of cluster.addresses."""
    env = cluster.client_credentials()
    tls = TLS(env["KVSTORE_TLS_CA"], env["KVSTORE_TLS_CERT"], env["KVSTORE_TLS_KEY"])
    credentials = channel_credentials(tls, env["KVSTORE_TOKEN"])
    assert credentials is not None
    channels = [grpc.secure_channel(a, credentials) for a in cluster.client_addresses]
    try:
        yield [pb_grpc.KVStub(channel) for channel in channels]
    finally:
        for channel in channels:
            channel.close()


def local_views(cluster: LocalCluster, key: bytes) -> list[tuple[list[bytes], bytes]]:
    """Each node's own record of the key (Admin.LocalGet): its values and context."""
    with Client(cluster.seeds, timeout=10.0) as kv:
        views = [kv.local_get(address, key) for address in cluster.addresses]
    return [(list(view.values), view.context) for view in views]


def test_a_retry_on_other_coordinators_is_answered_as_the_first_try(
    cluster: LocalCluster, stubs: list[pb_grpc.KVStub]
) -> None:
    key = b"write-id-retried"
    request = pb.PutRequest(key=key, value=b"once", w=3, write_id=WRITE_ID)
    first = stubs[0].Put(request, timeout=10)
    assert first.context
    for stub in stubs[1:]:
        assert stub.Put(request, timeout=10).context == first.context
    with Client(cluster.seeds, timeout=10.0) as kv:
        read = kv.get(key, r=3)
    assert list(read.values) == [b"once"]
    # No coordinator made a second dot: the key's clock is the first try's write alone.
    assert read.context == first.context
    assert local_views(cluster, key) == [([b"once"], first.context)] * 3

    # Control: another write id with the same context is another write, another sibling.
    other = pb.PutRequest(key=key, value=b"once", w=3, write_id=b"another write")
    stubs[1].Put(other, timeout=10)
    with Client(cluster.seeds, timeout=10.0) as kv:
        assert list(kv.get(key, r=3).values) == [b"once", b"once"]


def test_twins_of_a_retry_on_a_replica_the_first_try_missed_read_and_die_as_one(
    make_cluster: ClusterFactory,
) -> None:
    # No anti-entropy: the first try must not reach node 1 before its retry does.
    cluster = make_cluster(3, ("--anti-entropy-interval-ms", "0"))
    key = b"write-id-twins"
    request = pb.PutRequest(key=key, value=b"once", w=2, write_id=WRITE_ID)
    cluster.stop_node(1)
    for stubs in _stubs(cluster):
        first = stubs[0].Put(request, timeout=10)  # nodes 0 and 2 hold it
    cluster.stop_node(0)
    cluster.start_node(1)
    for stubs in _stubs(cluster):
        retried = stubs[1].Put(request, timeout=10)  # node 1 never saw it: a second dot
    cluster.start_node(0)
    assert retried.context != first.context

    with Client(cluster.seeds, timeout=10.0) as kv:
        read = kv.get(key, r=3)  # node 2 holds both twins; read repair spreads them
    assert list(read.values) == [b"once"]
    assert read.context not in (first.context, retried.context)
    deadline = time.monotonic() + 20
    while local_views(cluster, key) != [([b"once"], read.context)] * 3:
        assert time.monotonic() < deadline, local_views(cluster, key)
        time.sleep(0.2)

    # The writer took the retry's answer: its next put replaces the write, both dots of it.
    replace = pb.PutRequest(key=key, value=b"next", context=retried.context, w=3)
    for stubs in _stubs(cluster):
        stubs[2].Put(replace, timeout=10)
    with Client(cluster.seeds, timeout=10.0) as kv:
        assert list(kv.get(key, r=3).values) == [b"next"]
    assert [values for values, _ in local_views(cluster, key)] == [[b"next"]] * 3

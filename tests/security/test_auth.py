"""A secure cluster refuses every caller without the right credentials, on each port and
each API, and changes nothing for them: unauthenticated calls, wrong roles, a member
speaking for another, a certificate from another CA, plaintext to a TLS port, idle sockets
holding connections."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvstore import TLS, Client
from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import KvError, PermissionDenied, Unauthenticated
from kvstore.node.local_cluster import LocalCluster, local_material
from tests.conftest import credentials, free_ports, wait_converged

KEYS = [f"guarded-{i}".encode() for i in range(10)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    tls_dir = tmp_path_factory.mktemp("tls")
    with LocalCluster(
        3,
        tmp_path_factory.mktemp("auth"),
        ports=free_ports(3),
        tls_dir=tls_dir,
        extra_args=("--max-connections", "32"),
    ) as started:
        started.start()
        wait_converged(started)
        with Client(started.seeds, timeout=10.0, **credentials(started)) as kv:
            for key in KEYS:
                kv.put(key, b"value of " + key)
        yield started


def observed(cluster: LocalCluster) -> tuple[object, ...]:
    """What no refused caller may change: every node's ring and members, every value."""
    with Client(cluster.seeds, timeout=10.0, **credentials(cluster)) as kv:
        rings = [
            (
                kv.status(a).ring_epoch,
                sorted((m.address, m.status) for m in kv.status(a).members),
            )
            for a in cluster.addresses
        ]
        values = [kv.get(key).values for key in KEYS]
    return rings, values


def tls_of(cluster: LocalCluster, name: str | None) -> TLS:
    material = cluster.tls
    assert material is not None
    if name is None:
        return TLS(str(material.ca))
    return TLS(str(material.ca), str(material.client_cert(name)), str(material.client_key(name)))


def test_the_client_port_wants_a_token_with_the_right_role(cluster: LocalCluster) -> None:
    before = observed(cluster)
    ca_only = tls_of(cluster, None)
    with Client(cluster.seeds, tls=ca_only) as anonymous, pytest.raises(Unauthenticated):
        anonymous.get(KEYS[0])
    with (
        Client(cluster.seeds, tls=ca_only, token="not-a-token") as forger,
        pytest.raises(Unauthenticated),
    ):
        forger.put(KEYS[0], b"forged")
    with Client(cluster.seeds, tls=tls_of(cluster, None), token=cluster.tokens["read"]) as kv:
        assert kv.get(KEYS[0]).values == [b"value of " + KEYS[0]]
        with pytest.raises(PermissionDenied):
            kv.put(KEYS[0], b"by a reader")
        with pytest.raises(PermissionDenied):
            kv.put_many([(KEYS[1], b"by a reader")])
        with pytest.raises(PermissionDenied):
            kv.delete(KEYS[2])
    assert observed(cluster) == before
    with Client(cluster.seeds, tls=tls_of(cluster, None), token=cluster.tokens["write"]) as kv:
        kv.put(b"written-by-a-writer", b"ok")


def test_plaintext_to_a_tls_port_is_refused(cluster: LocalCluster) -> None:
    with Client(cluster.seeds, tls=False, timeout=3.0) as plain, pytest.raises(KvError):
        plain.get(KEYS[0])


def test_admin_verbs_want_an_admin_certificate(cluster: LocalCluster) -> None:
    before = observed(cluster)
    node = cluster.addresses[0]
    read = cluster.tokens["read"]
    with Client(cluster.seeds, tls=tls_of(cluster, "reader"), token=read, timeout=3.0) as kv:
        for verb in (kv.status, kv.leave, kv.join):
            with pytest.raises(PermissionDenied):
                verb(node)
        with pytest.raises(PermissionDenied):
            kv.remove(cluster.addresses[1], via=node)
        with pytest.raises(PermissionDenied):
            kv.local_get(node, KEYS[0])
    # Without any certificate the cluster port does not even finish the handshake.
    with (
        Client(cluster.seeds, tls=tls_of(cluster, None), token=read, timeout=3.0) as kv,
        pytest.raises(KvError),
    ):
        kv.leave(node)
    assert observed(cluster) == before


async def _call(address: str, method: str, request: bytes, tls: grpc.ChannelCredentials) -> str:
    async with grpc.aio.secure_channel(address, tls) as channel:
        try:
            await channel.unary_unary(method)(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"


def _credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())


def test_the_peer_api_wants_a_member_certificate_speaking_for_itself(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    material = cluster.tls
    assert material is not None
    before = observed(cluster)
    target = cluster.addresses[0]
    admin = _credentials(material.ca, material.client_cert("admin"), material.client_key("admin"))
    purge = pb.PurgeRequest(key=KEYS[0]).SerializeToString()
    dump = pb.PartitionRecordsRequest(partition=0, limit=10).SerializeToString()
    for method, request in (("Purge", purge), ("PartitionRecords", dump)):
        # An operator is not a member: the Peer API is for node certificates only.
        code = asyncio.run(_call(target, f"/kvstore.v1.Peer/{method}", request, admin))
        assert code == "PERMISSION_DENIED", method
    # A member may gossip, but only as itself.
    me = cluster.addresses[1]
    member = _credentials(material.ca, material.node_cert(me), material.node_key(me))
    with Client(cluster.seeds, **credentials(cluster)) as kv:
        status = kv.status(target)
    state = pb.ClusterState(format=1, partitions=256, n=3)
    for sender, expected in ((cluster.addresses[2], "PERMISSION_DENIED"), (me, "OK")):
        request = pb.GossipRequest(state=state, sender=sender).SerializeToString()
        code = asyncio.run(_call(target, "/kvstore.v1.Peer/Gossip", request, member))
        assert code == expected, sender
    assert status.ring_epoch == 1
    assert observed(cluster) == before


def test_a_certificate_from_another_ca_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    """A node certificate for a real member's address, from a CA of the attacker's own."""
    before = observed(cluster)
    me = cluster.addresses[1]
    other, _ = local_material(tmp_path / "other-ca", [me])
    forged = grpc.ssl_channel_credentials(
        cluster.tls.ca.read_bytes() if cluster.tls else None,
        other.node_key(me).read_bytes(),
        other.node_cert(me).read_bytes(),
    )
    request = pb.GossipRequest(state=pb.ClusterState(format=1), sender=me).SerializeToString()
    code = asyncio.run(_call(cluster.addresses[0], "/kvstore.v1.Peer/Gossip", request, forged))
    assert code == "UNAVAILABLE"  # the handshake fails: the call never reaches the node
    # And a client that trusts another CA does not trust the node.
    with (
        Client(cluster.seeds, tls=TLS(str(other.ca)), token=cluster.tokens["admin"]) as kv,
        pytest.raises(KvError),
    ):
        kv.get(KEYS[0])
    assert observed(cluster) == before


def test_idle_sockets_are_dropped_and_cannot_hold_the_connection_bound(
    cluster: LocalCluster,
) -> None:
    """More raw sockets than max_connections (32), none starting a TLS handshake: the node
    drops them after the handshake timeout (5 s) and serves clients again."""
    host, port = cluster.client_addresses[0].rsplit(":", 1)
    sockets = []
    try:
        for _ in range(100):
            sockets.append(socket.create_connection((host, int(port)), timeout=5))
        deadline = time.monotonic() + 20
        dropped = 0
        for s in sockets:
            s.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                dropped += s.recv(1) == b""  # closed by the node
            except ConnectionError:
                dropped += 1  # reset by the node
            except TimeoutError:
                pass
        assert dropped == len(sockets)
    finally:
        for s in sockets:
            s.close()
    with Client(cluster.seeds, **credentials(cluster)) as kv:
        assert kv.get(KEYS[0]).found

"""Probes an attacker on the same network could send to a running cluster, each as a few
forged peer messages (sent with the project's own peer transport, as another process would):
every one gets a typed refusal, and the data, the membership and the ring are the same
before and after.

Who may send peer messages at all (mTLS between members) is the next layer; these check
what a message may do whoever sent it.
"""

from __future__ import annotations

import socket
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest

from kvstore import Client
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client._loop import LoopThread
from kvstore.core.cluster import ClusterView, Member, MemberStatus, RingState
from kvstore.core.limits import Limits
from kvstore.core.requests import ForwardedPut, PutCommand
from kvstore.core.ring import initial_layout
from kvstore.core.transport import PeerFailure
from kvstore.core.versions import EMPTY, KeyState, write
from kvstore.node.local_cluster import LocalCluster
from kvstore.rpc.peer import PeerClient
from kvstore.storage.codec import cluster_to_proto, encode_record
from tests.conftest import free_ports, wait_converged

T = TypeVar("T")
STRANGER = "127.0.0.1:9"  # discard port: nothing of the cluster's
FRAME = 64 * 1024 * 1024
KEYS = [f"forged-{i}".encode() for i in range(20)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, tmp_path_factory.mktemp("forged"), ports=free_ports(3)) as started:
        started.start()
        wait_converged(started)
        with Client(started.seeds, timeout=10.0) as kv:
            for key in KEYS:
                kv.put(key, b"value of " + key)
        yield started


def observed(cluster: LocalCluster) -> tuple[object, ...]:
    """What a probe must not change: every node's ring and members, and every value."""
    with Client(cluster.seeds, timeout=10.0) as kv:
        rings = []
        for address in cluster.addresses:
            status = kv.status(address)
            members = sorted((m.address, m.status) for m in status.members)
            rings.append((address, status.ring_epoch, status.ring_pending, members))
        values = [sorted(kv.get(key).values) for key in KEYS]
    return (rings, values)


# One event loop for every probe of the module: grpc.aio keeps per-loop state, and a
# fresh loop per probe (asyncio.run) leaves its poller calling into closed ones.
_LOOP: LoopThread | None = None


@pytest.fixture(scope="module", autouse=True)
def probe_loop() -> Iterator[None]:
    global _LOOP
    _LOOP = LoopThread("security-probes")
    yield
    _LOOP.close()
    _LOOP = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    assert _LOOP is not None
    return _LOOP.run(coro)


def gossip(address: str, view: ClusterView) -> grpc.StatusCode:
    async def send() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(
            address, options=[("grpc.max_send_message_length", FRAME)]
        ) as channel:
            stub = pb_grpc.PeerStub(channel)
            try:
                await stub.Gossip(
                    pb.GossipRequest(state=cluster_to_proto(view), sender=STRANGER), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    return run(send())


def stranger(version: int = 1) -> Member:
    return Member(STRANGER, "evil", MemberStatus.ACTIVE, 1, version)


def test_a_ring_with_a_huge_epoch_does_not_take_the_cluster(cluster: LocalCluster) -> None:
    before = observed(cluster)
    takeover = RingState(2**62 - 1, initial_layout([STRANGER], 256, 3))
    view = ClusterView({STRANGER: stranger()}, takeover, 256, 3)
    assert gossip(cluster.addresses[0], view) == grpc.StatusCode.INVALID_ARGUMENT
    assert observed(cluster) == before


def test_twenty_thousand_fake_members_are_refused(cluster: LocalCluster) -> None:
    before = observed(cluster)
    members = {
        f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:7101": Member(
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:7101", "", MemberStatus.STANDBY, 1, 1
        )
        for i in range(20_000)
    }
    view = ClusterView(members, None, 256, 3)
    assert gossip(cluster.addresses[0], view) == grpc.StatusCode.INVALID_ARGUMENT
    assert observed(cluster) == before


def test_a_member_version_at_the_top_of_uint64_is_refused(cluster: LocalCluster) -> None:
    before = observed(cluster)
    view = ClusterView({STRANGER: stranger(2**64 - 1)}, None, 256, 3)
    assert gossip(cluster.addresses[0], view) == grpc.StatusCode.INVALID_ARGUMENT
    assert observed(cluster) == before


def concurrent(count: int, value: bytes = b"v") -> KeyState:
    state = EMPTY
    for i in range(count):
        state, _ = write(state, EMPTY.clock, f"forger{i}", value, 0)
    return state


def peer_call(coro_of: object) -> object:
    async def call() -> object:
        peers = PeerClient(FRAME)
        try:
            return await coro_of(peers)  # type: ignore[operator]
        except PeerFailure as exc:
            return exc
        finally:
            await peers.close()

    return run(call())


@pytest.mark.parametrize(
    "state",
    [concurrent(2 * Limits().max_siblings + 1), concurrent(1, b"x" * (5 * 1024 * 1024))],
    ids=["101-siblings", "5MiB-value"],
)
def test_a_merge_past_the_write_limits_is_refused(cluster: LocalCluster, state: KeyState) -> None:
    before = observed(cluster)
    record = encode_record(state)
    for address in cluster.addresses:
        outcome = peer_call(lambda peers, a=address: peers.merge(a, KEYS[0], record, 10.0))
        assert isinstance(outcome, PeerFailure), outcome
    assert observed(cluster) == before


def test_purge_of_a_live_value_is_refused(cluster: LocalCluster) -> None:
    before = observed(cluster)
    for address in cluster.addresses:
        live = peer_call(lambda peers, a=address: peers.read(a, KEYS[1], 10.0))
        assert isinstance(live, KeyState)
        outcome = peer_call(lambda peers, a=address, s=live: peers.purge(a, KEYS[1], s, 10.0))
        assert isinstance(outcome, PeerFailure) and outcome.code == "INVALID_ARGUMENT", outcome
    assert observed(cluster) == before


def test_a_forwarded_put_never_dials_a_sender_that_is_not_a_member(
    cluster: LocalCluster,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(1.0)
    bait = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        forward = ForwardedPut(
            command=PutCommand(key=b"forwarded", value=b"v"),
            hops=0,
            ring_epoch=2**62,
            sender=bait,
        )
        outcome = peer_call(lambda peers: peers.forward_put(cluster.addresses[0], forward, 10.0))
        assert not isinstance(outcome, Exception), outcome
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_unary_replica_calls_are_gone(cluster: LocalCluster) -> None:
    """The request path's replica calls exist only inside Peer/Stream."""

    async def call(method: str) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(cluster.addresses[0]) as channel:
            try:
                await channel.unary_unary(f"/kvstore.v1.Peer/{method}")(b"", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    for method in ("ReplicaRead", "ReplicaMerge", "ForwardPut"):
        assert run(call(method)) == grpc.StatusCode.UNIMPLEMENTED

"""A caller must not be able to write the node's log: garbage requests (and made-up gossip
senders) make a small, bounded number of lines, not a line (or a traceback) per call.

Before the limiter, 600 undecodable calls made 4,200 lines: grpc's "Unexpected [DecodeError]
raised by servicer method" with a 6-line traceback each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.security]

GARBAGE = b"\xff\x01garbage"
CALLS = 600
# (method, client-streaming and server-streaming): unary ones and a stream.
_TARGETS = (
    ("/kvstore.v1.KV/Put", False),
    ("/kvstore.v1.KV/Get", False),
    ("/kvstore.v1.Peer/ReplicaMergeBatch", False),
    ("/kvstore.v1.KV/Stream", True),
)


@pytest.fixture
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(1, tmp_path_factory.mktemp("flood"), ports=free_ports(1)) as cluster:
        cluster.start()
        yield cluster


def _log_lines(cluster: LocalCluster) -> list[str]:
    return cluster.nodes[0].log_path.read_text(errors="replace").splitlines()


async def _flood(node: LocalCluster) -> list[grpc.StatusCode]:
    gate = asyncio.Semaphore(32)

    async def one(index: int) -> grpc.StatusCode:
        path, streaming = _TARGETS[index % len(_TARGETS)]
        async with gate:
            # KV on the client port, Peer on the cluster port.
            channel = clients if path.startswith("/kvstore.v1.KV/") else peers
            try:
                if streaming:
                    call = channel.stream_stream(path)(iter([GARBAGE]), timeout=5)
                    async for _ in call:
                        pass
                    return await call.code()
                await channel.unary_unary(path)(GARBAGE, timeout=5)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    async with (
        grpc.aio.insecure_channel(node.client_addresses[0]) as clients,
        grpc.aio.insecure_channel(node.addresses[0]) as peers,
    ):
        return list(await asyncio.gather(*(one(i) for i in range(CALLS))))


def test_garbage_calls_log_one_line_per_method(node: LocalCluster) -> None:
    before = len(_log_lines(node))
    codes = asyncio.run(_flood(node))
    assert grpc.StatusCode.OK not in codes  # every one was refused
    added = _log_lines(node)[before:]
    # One line per method (the interval is 10 s; the flood takes far less), no traceback.
    assert len(added) <= 2 * len(_TARGETS), added
    assert not any("Traceback" in line for line in added), added
    for path, _ in _TARGETS:
        assert any(f"bad request to {path}: DecodeError" in line for line in added), added


def test_gossip_from_made_up_senders_is_reported_a_bounded_number_of_times(
    node: LocalCluster,
) -> None:
    with grpc.insecure_channel(node.addresses[0]) as channel:
        peer = pb_grpc.PeerStub(channel)
        info = peer.NodeInfo(pb.NodeInfoRequest(), timeout=5)
        empty = pb.ClusterState(format=1, partitions=info.partitions, n=info.n)
        state = peer.Gossip(pb.GossipRequest(state=empty, sender="probe"), timeout=5).state
        # A ring this node does not place keys by: refused, and reported.
        state.ring.current.members[0] = "10.0.0.1:1"
        before = len(_log_lines(node))
        for i in range(300):
            with pytest.raises(grpc.RpcError) as refused:
                peer.Gossip(pb.GossipRequest(state=state, sender=f"made-up-{i}\n"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    added = _log_lines(node)[before:]
    # A line for each of the first senders it remembers, one for all the others.
    assert 1 <= len(added) <= 20, added
    assert all("gossip from made-up-" in line for line in added), added

"""The peer transport: long-lived channels to other nodes and the replica calls over them."""

from __future__ import annotations

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.versions import KeyState
from kvstore.rpc.channels import ChannelPool
from kvstore.storage.codec import state_from_proto, state_to_proto


class PeerFailure(Exception):
    """A replica call did not succeed: the peer is down, slow, or refused."""


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Notice a dead peer within seconds instead of waiting for TCP.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        # Come back quickly after a peer restarts (default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


class PeerClient:
    """One channel per peer, created on first use and kept for the node's lifetime."""

    def __init__(self, max_message_bytes: int) -> None:
        options = channel_options(max_message_bytes)
        self._pool = ChannelPool(
            lambda address: grpc.aio.insecure_channel(address, options=options),
            pb_grpc.PeerStub,
        )
        self._stub = self._pool.stub

    async def read(self, address: str, key: bytes, timeout: float) -> KeyState | None:
        try:
            reply = await self._stub(address).ReplicaRead(
                pb.ReplicaReadRequest(key=key), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise PeerFailure(exc.code().name) from exc
        if not reply.found:
            return None
        try:
            return state_from_proto(reply.record)
        except ValueError as exc:
            raise PeerFailure(f"bad record: {exc}") from exc

    async def merge(self, address: str, key: bytes, state: KeyState, timeout: float) -> None:
        try:
            await self._stub(address).ReplicaMerge(
                pb.ReplicaMergeRequest(key=key, record=state_to_proto(state)), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise PeerFailure(exc.code().name) from exc

    async def forward_put(
        self, address: str, request: pb.PutRequest, hops: int, timeout: float
    ) -> pb.PutResponse:
        """Raises grpc.aio.AioRpcError unchanged: the caller needs the kvstore error inside."""
        response: pb.PutResponse = await self._stub(address).ForwardPut(
            pb.ForwardPutRequest(request=request, hops=hops), timeout=timeout
        )
        return response

    async def node_info(self, address: str, timeout: float) -> pb.NodeInfoResponse:
        """On a channel of its own: asking a peer that is not up yet must not put the data
        channel to it into reconnect backoff, where requests fail fast for seconds."""
        async with grpc.aio.insecure_channel(address) as channel:
            response: pb.NodeInfoResponse = await pb_grpc.PeerStub(channel).NodeInfo(
                pb.NodeInfoRequest(), timeout=timeout
            )
        return response

    async def close(self) -> None:
        for channel in self._pool.take_channels():
            await channel.close()

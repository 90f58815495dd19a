"""The peer transport: long-lived channels to other nodes and the replica calls over them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.versions import KeyState
from kvstore.rpc.channels import ChannelPool
from kvstore.storage.codec import state_from_proto, state_to_proto


class PeerFailure(Exception):
    """A replica call did not succeed: the peer is down, slow, or refused. `code` is the
    gRPC status name when the peer (or gRPC) answered with one."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _keyed_states(records: Iterable[pb.KeyedRecord]) -> list[tuple[bytes, KeyState]]:
    try:
        return [(r.key, state_from_proto(r.record)) for r in records]
    except ValueError as exc:
        raise PeerFailure(f"bad record: {exc}") from exc


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
        # Background work (gossip, anti-entropy, hint delivery, handoff) has channels of its
        # own: calling a peer that is not up yet (at start-up, after a crash) puts a channel
        # into reconnect backoff, where every call on it fails at once for up to two
        # seconds; the replica calls of client requests must not inherit that.
        # (gRPC shares connections between channels of equal settings unless told not to.)
        control_options = [*options, ("grpc.use_local_subchannel_pool", 1)]
        self._control = ChannelPool(
            lambda address: grpc.aio.insecure_channel(address, options=control_options),
            pb_grpc.PeerStub,
        )

    async def read(
        self, address: str, key: bytes, timeout: float, data_only: bool = False
    ) -> KeyState | None:
        try:
            reply = await self._stub(address).ReplicaRead(
                pb.ReplicaReadRequest(key=key, data_only=data_only),
                timeout=timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise PeerFailure(exc.code().name, exc.code().name) from exc
        if not reply.found:
            return None
        try:
            return state_from_proto(reply.record)
        except ValueError as exc:
            raise PeerFailure(f"bad record: {exc}") from exc

    async def merge(
        self,
        address: str,
        key: bytes,
        state: KeyState,
        timeout: float,
        hint_for: str | None = None,
    ) -> None:
        request = pb.ReplicaMergeRequest(
            key=key, record=state_to_proto(state), hint_for=hint_for or ""
        )
        await self._call(address, "ReplicaMerge", request, timeout, foreground=True)

    async def merge_batch(
        self, address: str, items: Sequence[tuple[bytes, KeyState]], timeout: float
    ) -> None:
        """Merge many states in one call; returns once all are durable at the peer."""
        request = pb.ReplicaMergeBatchRequest(
            items=[pb.ReplicaMergeRequest(key=k, record=state_to_proto(s)) for k, s in items]
        )
        await self._call(address, "ReplicaMergeBatch", request, timeout)

    async def gossip(
        self, address: str, sender: str, state: pb.ClusterState, timeout: float
    ) -> pb.ClusterState:
        request = pb.GossipRequest(state=state, sender=sender)
        reply: pb.GossipResponse = await self._call(address, "Gossip", request, timeout)
        return reply.state

    async def tree_hashes(
        self, address: str, partition: int, level: int, indices: Sequence[int], timeout: float
    ) -> list[bytes]:
        request = pb.TreeHashesRequest(partition=partition, level=level, indices=list(indices))
        reply: pb.TreeHashesResponse = await self._call(address, "TreeHashes", request, timeout)
        return list(reply.hashes)

    async def segment_records(
        self, address: str, partition: int, segments: Sequence[int], timeout: float
    ) -> list[tuple[bytes, KeyState]]:
        request = pb.SegmentRecordsRequest(partition=partition, segments=list(segments))
        reply: pb.SegmentRecordsResponse = await self._call(
            address, "SegmentRecords", request, timeout
        )
        return _keyed_states(reply.records)

    async def partition_records(
        self, address: str, partition: int, after: bytes, limit: int, timeout: float
    ) -> tuple[list[tuple[bytes, KeyState]], bytes, bool]:
        """One page of a peer's records of a partition: (records, last, done)."""
        request = pb.PartitionRecordsRequest(partition=partition, after=after, limit=limit)
        reply: pb.PartitionRecordsResponse = await self._call(
            address, "PartitionRecords", request, timeout
        )
        return _keyed_states(reply.records), reply.last, reply.done

    async def purge(self, address: str, key: bytes, state: KeyState, timeout: float) -> bool:
        """Delete the peer's record of `key` if it is still `state`; True if it did."""
        request = pb.PurgeRequest(key=key, record=state_to_proto(state))
        reply: pb.PurgeResponse = await self._call(address, "Purge", request, timeout)
        return reply.purged

    async def _call(
        self, address: str, method: str, request: Any, timeout: float, foreground: bool = False
    ) -> Any:
        stub = self._stub(address) if foreground else self._control.stub(address)
        try:
            # A replica call waits for a connection that is coming back (a restarted peer,
            # a channel in reconnect backoff) until its timeout instead of failing at once:
            # quorums are decided by whoever answers, and a silent primary of a write gets
            # a stand-in after replica_timeout_ms, so waiting delays no client.
            return await getattr(stub, method)(request, timeout=timeout, wait_for_ready=foreground)
        except grpc.aio.AioRpcError as exc:
            name, detail = exc.code().name, exc.details() or ""
            raise PeerFailure(f"{name}: {detail}" if detail else name, name) from exc

    async def forward_put(
        self, address: str, forward: pb.ForwardPutRequest, timeout: float
    ) -> pb.PutResponse:
        """Raises grpc.aio.AioRpcError unchanged: the caller needs the kvstore error inside."""
        response: pb.PutResponse = await self._stub(address).ForwardPut(forward, timeout=timeout)
        return response

    async def close(self) -> None:
        for channel in self._pool.take_channels() + self._control.take_channels():
            await channel.close()

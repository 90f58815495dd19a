"""The peer transport over gRPC: long-lived channels to other nodes and every node-to-node
message over them (kvstore.core.transport.PeerTransport)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.cluster import ClusterView
from kvstore.core.requests import ForwardedPut, PutAnswer
from kvstore.core.transport import PeerFailure, PeerUnreachable, RecordPage
from kvstore.core.versions import KeyState
from kvstore.rpc import translate
from kvstore.rpc.channels import ChannelPool
from kvstore.rpc.status import error_from_rpc, is_transport_failure
from kvstore.rpc.wire import merge_request_bytes
from kvstore.storage import paging
from kvstore.storage.codec import (
    cluster_from_proto,
    cluster_to_proto,
    state_from_proto,
    state_to_proto,
)

__all__ = ["PeerClient", "PeerFailure", "channel_options"]

_REPLICA_MERGE = "/kvstore.v1.Peer/ReplicaMerge"


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


class _Stubs:
    """The generated stub, and ReplicaMerge taking bytes already serialized (wire.py)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.peer = pb_grpc.PeerStub(channel)
        self.merge_encoded = channel.unary_unary(
            _REPLICA_MERGE,
            response_deserializer=pb.ReplicaMergeResponse.FromString,
            _registered_method=True,
        )


class PeerClient:
    """The gRPC PeerTransport: one channel per peer, created on first use and kept for the
    node's lifetime."""

    def __init__(self, max_message_bytes: int, routes: Mapping[str, str] | None = None) -> None:
        options = channel_options(max_message_bytes)
        # A peer is named by its advertised address; `routes` may say to dial another.
        dial = dict(routes or {})
        self._pool = ChannelPool(
            lambda address: grpc.aio.insecure_channel(dial.get(address, address), options=options),
            _Stubs,
        )
        # Background work (gossip, anti-entropy, hint delivery, handoff) has channels of its
        # own: calling a peer that is not up yet (at start-up, after a crash) puts a channel
        # into reconnect backoff, where every call on it fails at once for up to two
        # seconds; the replica calls of client requests must not inherit that.
        # (gRPC shares connections between channels of equal settings unless told not to.)
        control_options = [*options, ("grpc.use_local_subchannel_pool", 1)]
        self._control = ChannelPool(
            lambda address: grpc.aio.insecure_channel(
                dial.get(address, address), options=control_options
            ),
            pb_grpc.PeerStub,
        )

    async def read(
        self, address: str, key: bytes, timeout: float, data_only: bool = False
    ) -> KeyState | None:
        try:
            reply = await self._pool.stub(address).peer.ReplicaRead(
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
        self, address: str, key: bytes, record: bytes, timeout: float, hint_for: str = ""
    ) -> None:
        request = merge_request_bytes(key, record, hint_for)
        try:
            # Waits for a connection that is coming back (see _call).
            await self._pool.stub(address).merge_encoded(
                request, timeout=timeout, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc) from exc

    async def merge_batch(
        self, address: str, items: Iterable[tuple[bytes, KeyState]], timeout: float
    ) -> None:
        """Merge many states at the peer; returns once all are durable there.

        Sent in order as requests of at most PAGE_BYTES each (at least one state each), so a
        batch of any size fits the peer's frame limit; each request has `timeout`. Raises
        PeerFailure on the first request that fails: the states before it are merged, those
        after it are not sent (merges are idempotent, so the caller just retries them all).
        """
        batch: list[pb.ReplicaMergeRequest] = []
        batch_bytes = 0
        for key, state in items:
            item = pb.ReplicaMergeRequest(key=key, record=state_to_proto(state))
            item_bytes = item.ByteSize() + paging.RECORD_FRAMING_BYTES
            if batch and batch_bytes + item_bytes > paging.PAGE_BYTES:
                await self._merge_request(address, batch, timeout)
                batch, batch_bytes = [], 0
            batch.append(item)
            batch_bytes += item_bytes
        if batch:
            await self._merge_request(address, batch, timeout)

    async def _merge_request(
        self, address: str, items: list[pb.ReplicaMergeRequest], timeout: float
    ) -> None:
        request = pb.ReplicaMergeBatchRequest(items=items)
        await self._call(address, "ReplicaMergeBatch", request, timeout)

    async def gossip(
        self, address: str, sender: str, view: ClusterView, timeout: float
    ) -> ClusterView:
        """Raises ValueError for a reply this node cannot read."""
        request = pb.GossipRequest(state=cluster_to_proto(view), sender=sender)
        reply: pb.GossipResponse = await self._call(address, "Gossip", request, timeout)
        return cluster_from_proto(reply.state)

    async def tree_hashes(
        self, address: str, partition: int, level: int, indices: Sequence[int], timeout: float
    ) -> list[bytes]:
        request = pb.TreeHashesRequest(partition=partition, level=level, indices=list(indices))
        reply: pb.TreeHashesResponse = await self._call(address, "TreeHashes", request, timeout)
        return list(reply.hashes)

    async def segment_records(
        self,
        address: str,
        partition: int,
        segments: Sequence[int],
        after: bytes,
        timeout: float,
    ) -> RecordPage:
        request = pb.SegmentRecordsRequest(
            partition=partition, segments=list(segments), after=after
        )
        reply: pb.SegmentRecordsResponse = await self._call(
            address, "SegmentRecords", request, timeout
        )
        return _keyed_states(reply.records), reply.last, reply.done

    async def partition_records(
        self, address: str, partition: int, after: bytes, limit: int, timeout: float
    ) -> RecordPage:
        request = pb.PartitionRecordsRequest(partition=partition, after=after, limit=limit)
        reply: pb.PartitionRecordsResponse = await self._call(
            address, "PartitionRecords", request, timeout
        )
        return _keyed_states(reply.records), reply.last, reply.done

    async def purge(self, address: str, key: bytes, state: KeyState, timeout: float) -> bool:
        request = pb.PurgeRequest(key=key, record=state_to_proto(state))
        reply: pb.PurgeResponse = await self._call(address, "Purge", request, timeout)
        return reply.purged

    async def _call(self, address: str, method: str, request: Any, timeout: float) -> Any:
        try:
            return await getattr(self._control.stub(address), method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc) from exc

    async def forward_put(self, address: str, forward: ForwardedPut, timeout: float) -> PutAnswer:
        """PeerUnreachable when no connection could be made (the put was never sent); a
        deadline is PeerFailure (outcome unknown); any other failure is the kvstore error
        the peer's answer stands for (a connection cut mid-call: TransportError)."""
        try:
            response: pb.PutResponse = await self._pool.stub(address).peer.ForwardPut(
                translate.forward_put_request(forward), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            if is_transport_failure(exc):
                raise PeerUnreachable(f"{address}: {exc.details() or ''}") from exc
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise PeerFailure(exc.code().name, exc.code().name) from exc
            raise error_from_rpc(exc, address) from exc
        return translate.put_answer(response)

    async def close(self) -> None:
        for channel in self._pool.take_channels() + self._control.take_channels():
            await channel.close()


def _failure(exc: grpc.aio.AioRpcError) -> PeerFailure:
    name, detail = exc.code().name, exc.details() or ""
    return PeerFailure(f"{name}: {detail}" if detail else name, name)

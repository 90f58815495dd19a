"""gRPC servicers: decode a request, call the node, encode the answer or the error."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.cluster import MemberStatus
from kvstore.core.versions import KeyState
from kvstore.errors import ClusterRefused, InternalError, InvalidArgument, KvError
from kvstore.node.antientropy import partition_range
from kvstore.rpc.peer import take_page
from kvstore.rpc.status import abort
from kvstore.storage.codec import decode_record, encode_context, state_from_proto, state_to_proto

if TYPE_CHECKING:
    from kvstore.node.antientropy import AntiEntropy
    from kvstore.node.app import Node
    from kvstore.node.gossip import Gossip
    from kvstore.node.handoff import Handoff

# Records per page of a partition handed off.
MAX_PAGE = 5_000

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _answer(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except KvError as exc:
        await abort(context, exc)
    except Exception as exc:
        log.exception("internal error")
        await abort(context, InternalError(f"{type(exc).__name__}: {exc}"))
    raise AssertionError("abort returned")  # context.abort always raises


def _peer_state(record: pb.KeyRecord) -> KeyState:
    try:
        return state_from_proto(record)
    except ValueError as exc:
        raise InternalError(f"peer sent a bad record: {exc}") from exc


def _keyed_states(items: Iterable[pb.ReplicaMergeRequest]) -> list[tuple[bytes, KeyState]]:
    return [(item.key, _peer_state(item.record)) for item in items]


def _keyed_records(items: Iterable[tuple[bytes, KeyState]]) -> list[pb.KeyedRecord]:
    return [pb.KeyedRecord(key=key, record=state_to_proto(state)) for key, state in items]


def get_response(key: bytes, state: KeyState | None) -> pb.GetResponse:
    if state is None:
        return pb.GetResponse(found=False)
    return pb.GetResponse(
        values=state.live_values, context=encode_context(state.clock, key), found=state.found
    )


class KVServicer(pb_grpc.KVServicer):
    def __init__(self, node: Node) -> None:
        self._node = node

    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        async def call() -> pb.GetResponse:
            state = await self._node.get(
                request.key, request.r, request.timeout_ms, strict=request.strict
            )
            return get_response(request.key, state)

        return await _answer(context, call)

    async def Put(
        self, request: pb.PutRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutResponse:
        async def call() -> pb.PutResponse:
            return await self._node.put(request)

        return await _answer(context, call)

    async def LocalGet(
        self, request: pb.LocalGetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        async def call() -> pb.GetResponse:
            return get_response(request.key, self._node.local_get(request.key))

        return await _answer(context, call)


class PeerServicer(pb_grpc.PeerServicer):
    def __init__(self, node: Node, gossip: Gossip, anti_entropy: AntiEntropy) -> None:
        self._node = node
        self._gossip = gossip
        self._anti_entropy = anti_entropy

    async def ReplicaRead(
        self, request: pb.ReplicaReadRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaReadResponse:
        async def call() -> pb.ReplicaReadResponse:
            read = self._node.gc_read if request.data_only else self._node.replica_read
            state = read(request.key)
            if state is None:
                return pb.ReplicaReadResponse(found=False)
            return pb.ReplicaReadResponse(found=True, record=state_to_proto(state))

        return await _answer(context, call)

    async def ReplicaMerge(
        self, request: pb.ReplicaMergeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaMergeResponse:
        async def call() -> pb.ReplicaMergeResponse:
            state = _peer_state(request.record)
            self._node.replica_merge(request.key, state, request.hint_for)
            return pb.ReplicaMergeResponse()

        return await _answer(context, call)

    async def ReplicaMergeBatch(
        self, request: pb.ReplicaMergeBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaMergeBatchResponse:
        async def call() -> pb.ReplicaMergeBatchResponse:
            self._node.replica_merge_batch(_keyed_states(request.items))
            return pb.ReplicaMergeBatchResponse()

        return await _answer(context, call)

    async def Gossip(
        self, request: pb.GossipRequest, context: grpc.aio.ServicerContext
    ) -> pb.GossipResponse:
        async def call() -> pb.GossipResponse:
            try:
                return pb.GossipResponse(state=self._gossip.on_request(request))
            except ValueError as exc:  # ClusterMismatch too
                raise ClusterRefused(str(exc)) from exc

        return await _answer(context, call)

    async def TreeHashes(
        self, request: pb.TreeHashesRequest, context: grpc.aio.ServicerContext
    ) -> pb.TreeHashesResponse:
        async def call() -> pb.TreeHashesResponse:
            try:
                hashes = self._anti_entropy.hashes(
                    request.partition, request.level, request.indices
                )
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            return pb.TreeHashesResponse(hashes=hashes)

        return await _answer(context, call)

    async def SegmentRecords(
        self, request: pb.SegmentRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SegmentRecordsResponse:
        async def call() -> pb.SegmentRecordsResponse:
            records, last, done = self._anti_entropy.segment_page(
                request.partition, request.segments, request.after
            )
            return pb.SegmentRecordsResponse(records=_keyed_records(records), last=last, done=done)

        return await _answer(context, call)

    async def PartitionRecords(
        self, request: pb.PartitionRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PartitionRecordsResponse:
        async def call() -> pb.PartitionRecordsResponse:
            ring = self._node.require_ring()
            if not 0 <= request.partition < ring.partitions:
                raise InvalidArgument(f"partition must be in 0..{ring.partitions - 1}")
            limit = min(max(request.limit, 1), MAX_PAGE)
            low, high = partition_range(ring, request.partition)
            scan = self._node.storage.scan(low, high, request.after)
            # Bounded in bytes as well as in records, so a page always fits a frame.
            page, last, done = take_page(scan, request.after, limit)
            records = [(key, decode_record(raw)) for _, key, raw in page]
            return pb.PartitionRecordsResponse(
                records=_keyed_records(records), last=last, done=done
            )

        return await _answer(context, call)

    async def ForwardPut(
        self, request: pb.ForwardPutRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutResponse:
        async def call() -> pb.PutResponse:
            if request.ring_epoch > self._node.ring_epoch and request.sender:
                await self._gossip.exchange(request.sender)
            return await self._node.put(request.request, hops=request.hops)

        return await _answer(context, call)

    async def NodeInfo(
        self, request: pb.NodeInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeInfoResponse:
        return self._node.info()

    async def Purge(
        self, request: pb.PurgeRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeResponse:
        async def call() -> pb.PurgeResponse:
            state = _peer_state(request.record)
            self._node.limits.check_key(request.key)
            return pb.PurgeResponse(
                purged=self._node.storage.purge_tombstone(
                    request.key, state, time.time_ns() // 1_000_000
                )
            )

        return await _answer(context, call)


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, node: Node, handoff: Handoff) -> None:
        self._node = node
        self._handoff = handoff

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        async def call() -> pb.StatusResponse:
            return self._node.status(self._handoff.pending_pulls())

        return await _answer(context, call)

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinResponse:
        async def call() -> pb.JoinResponse:
            self._node.request_status(MemberStatus.JOINING)
            return pb.JoinResponse()

        return await _answer(context, call)

    async def Leave(
        self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaveResponse:
        async def call() -> pb.LeaveResponse:
            self._node.request_status(MemberStatus.LEAVING)
            return pb.LeaveResponse()

        return await _answer(context, call)

    async def Remove(
        self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        async def call() -> pb.RemoveResponse:
            self._node.remove_member(request.address)
            return pb.RemoveResponse()

        return await _answer(context, call)

    async def Locate(
        self, request: pb.LocateRequest, context: grpc.aio.ServicerContext
    ) -> pb.LocateResponse:
        async def call() -> pb.LocateResponse:
            return self._node.locate(request.key)

        return await _answer(context, call)

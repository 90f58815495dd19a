"""gRPC servicers: decode a request, call the node, encode the answer or the error."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.versions import KeyState
from kvstore.errors import InternalError, KvError
from kvstore.rpc.status import abort
from kvstore.storage.codec import encode_context, state_from_proto, state_to_proto

if TYPE_CHECKING:
    from kvstore.node.app import Node

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


def get_response(key: bytes, state: KeyState | None) -> pb.GetResponse:
    if state is None:
        return pb.GetResponse(found=False)
    return pb.GetResponse(
        values=state.live_values, context=encode_context(state.vector, key), found=state.found
    )


class KVServicer(pb_grpc.KVServicer):
    def __init__(self, node: Node) -> None:
        self._node = node

    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        async def call() -> pb.GetResponse:
            return get_response(
                request.key, await self._node.get(request.key, request.r, request.timeout_ms)
            )

        return await _answer(context, call)

    async def Put(
        self, request: pb.PutRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutResponse:
        async def call() -> pb.PutResponse:
            return pb.PutResponse(context=await self._node.put(request, hops=0))

        return await _answer(context, call)

    async def LocalGet(
        self, request: pb.LocalGetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        async def call() -> pb.GetResponse:
            return get_response(request.key, self._node.local_get(request.key))

        return await _answer(context, call)


class PeerServicer(pb_grpc.PeerServicer):
    def __init__(self, node: Node) -> None:
        self._node = node

    async def ReplicaRead(
        self, request: pb.ReplicaReadRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaReadResponse:
        async def call() -> pb.ReplicaReadResponse:
            state = self._node.local_get(request.key)
            if state is None:
                return pb.ReplicaReadResponse(found=False)
            return pb.ReplicaReadResponse(found=True, record=state_to_proto(state))

        return await _answer(context, call)

    async def ReplicaMerge(
        self, request: pb.ReplicaMergeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaMergeResponse:
        async def call() -> pb.ReplicaMergeResponse:
            try:
                state = state_from_proto(request.record)
            except ValueError as exc:
                raise InternalError(f"peer sent a bad record: {exc}") from exc
            self._node.replica_merge(request.key, state)
            return pb.ReplicaMergeResponse()

        return await _answer(context, call)

    async def ForwardPut(
        self, request: pb.ForwardPutRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutResponse:
        async def call() -> pb.PutResponse:
            return pb.PutResponse(context=await self._node.put(request.request, hops=request.hops))

        return await _answer(context, call)

    async def NodeInfo(
        self, request: pb.NodeInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeInfoResponse:
        return self._node.info()

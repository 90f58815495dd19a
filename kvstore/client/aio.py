"""The asyncio client: every call of every task rides one long-lived stream per node
(kvstore.v1.KV/Stream), the calls ready in one turn of the event loop in one message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client._common import (
    CHANNEL_OPTIONS,
    MAX_MESSAGE_BYTES,
    DeleteLike,
    Key,
    PutLike,
    RequestBuilder,
    Resolver,
    failure,
    get_call,
    get_many_call,
    key_bytes,
    no_node_answered,
    put_call,
    put_many_call,
)
from kvstore.client.credentials import TLS, channel_credentials, open_channel
from kvstore.client.results import GetItem, GetResult, PutResult, PutResultItem
from kvstore.errors import (
    BatchTooLarge,
    Draining,
    InvalidArgument,
    InvalidKey,
    KvError,
    PermissionDenied,
    Timeout,
    TransportError,
    Unauthenticated,
    ValueTooLarge,
)
from kvstore.rpc.channels import ChannelPool
from kvstore.rpc.status import error_from_call
from kvstore.rpc.streams import CallStream, CallTooLarge, NeverSent, OutcomeUnknown, stream_to

T = TypeVar("T")

_STREAM = "/kvstore.v1.KV/Stream"
# The bytes of calls to one node that may be queued or unanswered at once; past it a call
# waits (within its timeout) for room.
CLIENT_INFLIGHT_BYTES = 64 * 1024 * 1024
# A call larger than the node takes (it announces its limit) fails before it is sent, as:
_TOO_LARGE: dict[str, type[InvalidArgument]] = {
    "get": InvalidKey,
    "put": ValueTooLarge,
    "get_many": BatchTooLarge,
    "put_many": BatchTooLarge,
}


_REFUSED_CREDENTIALS: dict[str, type[KvError]] = {
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
}


class AsyncClient:
    """Talks to any node of a cluster; a call whose node cannot be reached goes to the next.

    async with AsyncClient("127.0.0.1:7101,127.0.0.1:7102") as kv:
        await kv.put("k", b"v")
        result = await kv.get("k")
        items = await kv.get_many(["a", "b"])   # GetResult, or the key's error
    """

    def __init__(
        self,
        seeds: str | Sequence[str],
        timeout: float = 5.0,
        resolver: Resolver | None = None,
        max_inflight_bytes: int = CLIENT_INFLIGHT_BYTES,
        tls: TLS | str | bool | None = None,
        token: str | None = None,
    ) -> None:
        """`tls`: the cluster CA's PEM file (or a TLS with a client certificate too; None:
        from KVSTORE_TLS_* if set, False: plaintext); `token`: a bearer token for the
        client port (needs `tls`; None: KVSTORE_TOKEN if set)."""
        self._requests = RequestBuilder(seeds, timeout, resolver)
        credentials = channel_credentials(tls, token)
        self._pool = ChannelPool(
            lambda address: open_channel(address, credentials, CHANNEL_OPTIONS, aio=True),
            pb_grpc.KVStub,
        )
        self._streams: dict[str, CallStream[pb.ClientResult]] = {}
        self._max_inflight_bytes = max_inflight_bytes

    def stream(self, address: str) -> CallStream[pb.ClientResult]:
        """The stream of calls to the node at `address` (opened on first use)."""
        stream = self._streams.get(address)
        if stream is None:
            self._pool.stub(address)
            stream = self._streams[address] = stream_to(
                f"node {address}",
                self._pool.channels[address],
                _STREAM,
                pb.ClientResults,
                # A node that cannot be reached fails the call at once: the next is tried.
                wait_for_ready=False,
                max_inflight_bytes=self._max_inflight_bytes,
                max_message_bytes=MAX_MESSAGE_BYTES,
            )
        return stream

    async def _send(self, body: bytes, kind: str) -> Any:
        """One call on the stream of the first node that can be reached; the next node is
        tried only when the call never left (so a write is never applied twice)."""
        errors: list[KvError] = []
        deadline = self._requests.deadline_s
        for address in self._requests.node_order():
            try:
                result = await self.stream(address).call(body, deadline, fail_fast=True)
            except NeverSent as exc:
                if exc.code in _REFUSED_CREDENTIALS:
                    # Every node of the cluster checks the same credentials: say so now.
                    raise _REFUSED_CREDENTIALS[exc.code](str(exc)) from None
                errors.append(TransportError(f"cannot reach node ({address}): {exc}"))
                continue
            except OutcomeUnknown as exc:
                if exc.deadline:
                    raise Timeout(
                        f"deadline exceeded ({address}): the outcome is unknown"
                    ) from None
                raise TransportError(
                    f"connection to {address} lost mid-call: the outcome is unknown ({exc})"
                ) from None
            except CallTooLarge as exc:
                raise _TOO_LARGE.get(kind, BatchTooLarge)(str(exc)) from None
            got = result.WhichOneof("result")
            if got == "error":
                error = error_from_call(result.error, address)
                if isinstance(error, Draining):  # refused before anything was done
                    errors.append(error)
                    continue
                raise error
            if got != kind:
                raise KvError(f"{address} answered a {kind} with {got}")
            return getattr(result, kind)
        if errors and all(isinstance(e, Draining) for e in errors):
            raise errors[-1]  # every node refused it as it drains: say that, not "unreachable"
        raise no_node_answered(errors)

    async def get(
        self,
        key: Key,
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> GetResult:
        """As Client.get."""
        request = self._requests.get_request(key, r, sloppy)
        response = await self._send(get_call(request), "get")
        return self._requests.get_result(response, resolver)

    async def put(
        self,
        key: Key,
        value: bytes,
        context: bytes | None = None,
        w: int | None = None,
        return_body: bool = False,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> PutResult:
        """As Client.put: `return_body=True` answers with the siblings after the write."""
        request = self._requests.put_request(key, value, context, w, sloppy, return_body)
        response = await self._send(put_call(request), "put")
        return self._requests.put_result(response, resolver)

    async def delete(
        self, key: Key, context: bytes | None = None, w: int | None = None, sloppy: bool = True
    ) -> PutResult:
        request = self._requests.put_request(key, None, context, w, sloppy)
        response = await self._send(put_call(request), "put")
        return self._requests.put_result(response, None)

    async def get_many(
        self,
        keys: Iterable[Key],
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> list[GetItem]:
        """As Client.get_many."""
        request = self._requests.get_many_request(keys, r, sloppy)
        if not request.keys:
            return []
        response = await self._send(get_many_call(request), "get_many")
        return self._requests.get_many_result(response, len(request.keys), resolver)

    async def put_many(
        self,
        items: Iterable[PutLike],
        w: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> list[PutResultItem]:
        """As Client.put_many."""
        request = self._requests.put_many_request(items, w, sloppy)
        return await self._put_many(request, resolver)

    async def delete_many(
        self, items: Iterable[DeleteLike], w: int | None = None, sloppy: bool = True
    ) -> list[PutResultItem]:
        """As Client.delete_many."""
        return await self._put_many(self._requests.delete_many_request(items, w, sloppy), None)

    async def _put_many(
        self, request: pb.PutManyRequest, resolver: Resolver | None
    ) -> list[PutResultItem]:
        if not request.items:
            return []
        response = await self._send(put_many_call(request), "put_many")
        return self._requests.put_many_result(response, len(request.items), resolver)

    async def _call(
        self, send: Callable[[pb_grpc.KVStub], Awaitable[T]], addresses: Any = None
    ) -> T:
        errors: list[KvError] = []
        for address in addresses or self._requests.node_order():
            try:
                return await send(self._pool.stub(address))
            except grpc.aio.AioRpcError as exc:
                error, try_next = failure(exc, address)
                if not try_next:
                    raise error from None
                errors.append(error)
        raise no_node_answered(errors)

    async def local_get(self, node_address: str, key: Key) -> GetResult:
        """One node's own stored versions of a key, without coordination (debugging, tests).

        Asks only that node, so it waits (within the timeout) for a connection to it rather
        than failing at once while the channel is backing off after the node restarted."""
        request = pb.LocalGetRequest(key=key_bytes(key))
        deadline = self._requests.deadline_s
        response = await self._call(
            lambda _: self._admin(node_address).LocalGet(
                request, timeout=deadline, wait_for_ready=True
            ),
            [node_address],
        )
        return self._requests.get_result(response, resolver=None)

    def _admin(self, node_address: str) -> pb_grpc.AdminStub:
        self._pool.stub(node_address)  # opens (or reuses) the channel to the node
        return pb_grpc.AdminStub(self._pool.channels[node_address])

    async def close(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.close()
        for channel in self._pool.take_channels():
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

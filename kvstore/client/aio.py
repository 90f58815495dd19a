"""The asyncio client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client._common import (
    CHANNEL_OPTIONS,
    Key,
    RequestBuilder,
    Resolver,
    failure,
    key_bytes,
    no_node_answered,
)
from kvstore.client.results import GetResult, PutResult
from kvstore.errors import KvError
from kvstore.rpc.channels import ChannelPool

T = TypeVar("T")


class AsyncClient:
    """Talks to any node of a cluster; a call whose node cannot be reached goes to the next.

    async with AsyncClient("127.0.0.1:7101,127.0.0.1:7102") as kv:
        await kv.put("k", b"v")
        result = await kv.get("k")
    """

    def __init__(
        self,
        seeds: str | Sequence[str],
        timeout: float = 5.0,
        resolver: Resolver | None = None,
    ) -> None:
        self._requests = RequestBuilder(seeds, timeout, resolver)
        self._pool = ChannelPool(
            lambda address: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS),
            pb_grpc.KVStub,
        )

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

    async def get(
        self, key: Key, r: int | None = None, resolver: Resolver | None = None
    ) -> GetResult:
        request = self._requests.get_request(key, r)
        deadline = self._requests.deadline_s
        response = await self._call(lambda stub: stub.Get(request, timeout=deadline))
        return self._requests.get_result(response, resolver)

    async def put(
        self,
        key: Key,
        value: bytes,
        context: bytes | None = None,
        w: int | None = None,
        return_body: bool = False,
        resolver: Resolver | None = None,
    ) -> PutResult:
        """As Client.put: `return_body=True` answers with the siblings after the write."""
        request = self._requests.put_request(key, value, context, w, return_body=return_body)
        return await self._put(request, resolver)

    async def delete(
        self, key: Key, context: bytes | None = None, w: int | None = None
    ) -> PutResult:
        request = self._requests.put_request(key, None, context, w)
        return await self._put(request, None)

    async def _put(self, request: pb.PutRequest, resolver: Resolver | None) -> PutResult:
        deadline = self._requests.deadline_s
        response = await self._call(lambda stub: stub.Put(request, timeout=deadline))
        return self._requests.put_result(response, resolver)

    async def local_get(self, node_address: str, key: Key) -> GetResult:
        """One node's own stored versions of a key, without coordination (debugging, tests).

        Asks only that node, so it waits (within the timeout) for a connection to it rather
        than failing at once while the channel is backing off after the node restarted."""
        request = pb.LocalGetRequest(key=key_bytes(key))
        deadline = self._requests.deadline_s
        response = await self._call(
            lambda stub: stub.LocalGet(request, timeout=deadline, wait_for_ready=True),
            [node_address],
        )
        return self._requests.get_result(response, resolver=None)

    async def close(self) -> None:
        for channel in self._pool.take_channels():
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

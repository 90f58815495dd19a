"""The blocking client: the same calls as AsyncClient. Gets, puts and deletes run on an
AsyncClient of its own, on an event loop thread it owns, so they ride the same multiplexed
streams (and calls from many threads share them); the operator calls stay unary, on grpc's
synchronous channels."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client._common import (
    CHANNEL_OPTIONS,
    DeleteLike,
    Key,
    PutLike,
    RequestBuilder,
    Resolver,
    failure,
    key_bytes,
    no_node_answered,
)
from kvstore.client._loop import LoopThread
from kvstore.client.aio import AsyncClient
from kvstore.client.credentials import TLS, channel_credentials, open_channel
from kvstore.client.results import GetItem, GetResult, PutResult, PutResultItem
from kvstore.errors import KvError
from kvstore.rpc.channels import ChannelPool

T = TypeVar("T")


class Client:
    """Talks to any node of a cluster; a call whose node cannot be reached goes to the next.

    with Client("127.0.0.1:7101,127.0.0.1:7102", timeout=2.0) as kv:
        kv.put("k", b"v")
        print(kv.get("k").values)
    """

    def __init__(
        self,
        seeds: str | Sequence[str],
        timeout: float = 5.0,
        resolver: Resolver | None = None,
        tls: TLS | str | bool | None = None,
        token: str | None = None,
    ) -> None:
        """`tls`: the cluster CA's PEM file (or a TLS with a client certificate too; None:
        from KVSTORE_TLS_* if set, False: plaintext); `token`: a bearer token for the
        client port (needs `tls`; None: KVSTORE_TOKEN if set)."""
        self._requests = RequestBuilder(seeds, timeout, resolver)
        credentials = channel_credentials(tls, token)
        self._pool = ChannelPool(
            lambda address: open_channel(address, credentials, CHANNEL_OPTIONS, aio=False),
            pb_grpc.KVStub,
        )
        self._closed = False
        self._loop = LoopThread()
        try:
            self._async = self._loop.run(_async_client(seeds, timeout, resolver, tls, token))
        except BaseException:
            self._loop.close()  # no thread left behind by a client that never was
            raise

    def _call(
        self, send: Callable[[pb_grpc.KVStub], T], addresses: Iterable[str] | None = None
    ) -> T:
        errors: list[KvError] = []
        for address in addresses or self._requests.node_order():
            try:
                return send(self._pool.stub(address))
            except grpc.RpcError as exc:
                error, try_next = failure(exc, address)
                if not try_next:
                    raise error from None
                errors.append(error)
        raise no_node_answered(errors)

    def get(
        self,
        key: Key,
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> GetResult:
        """`sloppy=False` counts only the key's primaries towards r (Riak's PR)."""
        return self._loop.run(self._async.get(key, r, resolver, sloppy))

    def put(
        self,
        key: Key,
        value: bytes,
        context: bytes | None = None,
        w: int | None = None,
        sloppy: bool = True,
        return_body: bool = False,
        resolver: Resolver | None = None,
    ) -> PutResult:
        """`sloppy=False` counts only the key's primaries towards w (Riak's PW): no
        fallback stands in for a primary that is down. `return_body=True` answers with the
        siblings after the write (`PutResult.values`, merged by the resolver if one is
        given) and a context covering them."""
        return self._loop.run(
            self._async.put(key, value, context, w, return_body, resolver, sloppy)
        )

    def delete(
        self, key: Key, context: bytes | None = None, w: int | None = None, sloppy: bool = True
    ) -> PutResult:
        return self._loop.run(self._async.delete(key, context, w, sloppy))

    # ---- batches: one request, per-key results ----

    def get_many(
        self,
        keys: Iterable[Key],
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> list[GetItem]:
        """Read many keys in one request: a list in the keys' order, each item the key's
        GetResult or the error reading it failed with (InvalidKey, Unavailable, ...: the
        errors `get` raises). A batch past the node's max_batch_items (1,000 by default) is
        refused whole, BatchTooLarge; so is an option out of range (InvalidOption)."""
        return self._loop.run(self._async.get_many(keys, r, resolver, sloppy))

    def put_many(
        self,
        items: Iterable[PutLike],
        w: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
    ) -> list[PutResultItem]:
        """Write many keys in one request. Each item is a PutItem(key, value, context,
        return_body) or a (key, value) / (key, value, context) tuple, with its own context;
        a value of None deletes. Answers a list in the items' order, each the item's
        PutResult or its error. The node commits the writes that arrive together in one
        RocksDB WriteBatch; a failed item does not fail the others."""
        return self._loop.run(self._async.put_many(items, w, resolver, sloppy))

    def delete_many(
        self, items: Iterable[DeleteLike], w: int | None = None, sloppy: bool = True
    ) -> list[PutResultItem]:
        """Delete many keys: each item a key or a (key, context) pair."""
        return self._loop.run(self._async.delete_many(items, w, sloppy))

    def local_get(self, node_address: str, key: Key) -> GetResult:
        """One node's own stored versions of a key, without coordination (debugging, tests).

        Asks only that node, so it waits (within the timeout) for a connection to it rather
        than failing at once while the channel is backing off after the node restarted."""
        request = pb.LocalGetRequest(key=key_bytes(key))
        deadline = self._requests.deadline_s
        response = self._call(
            lambda _: self._admin(node_address).LocalGet(
                request, timeout=deadline, wait_for_ready=True
            ),
            [node_address],
        )
        return self._requests.get_result(response, resolver=None)

    # ---- operators: asked of one node about itself ----

    def _admin(self, node_address: str) -> pb_grpc.AdminStub:
        self._pool.stub(node_address)  # opens (or reuses) the channel to the node
        return pb_grpc.AdminStub(self._pool.channels[node_address])

    def status(self, node_address: str) -> pb.StatusResponse:
        """The node's view: members (state, up/down, partitions), ring epoch, pending hints
        and handoffs, and its counters."""
        request = pb.StatusRequest()
        deadline = self._requests.deadline_s
        response: pb.StatusResponse = self._call(
            lambda _: self._admin(node_address).Status(request, timeout=deadline),
            [node_address],
        )
        return response

    def join(self, node_address: str) -> None:
        """Ask a standby node (started with seeds that do not list it) to join the ring."""
        deadline = self._requests.deadline_s
        self._call(
            lambda _: self._admin(node_address).Join(pb.JoinRequest(), timeout=deadline),
            [node_address],
        )

    def leave(self, node_address: str) -> None:
        """Ask a node to leave the ring: its partitions move to the others first."""
        deadline = self._requests.deadline_s
        self._call(
            lambda _: self._admin(node_address).Leave(pb.LeaveRequest(), timeout=deadline),
            [node_address],
        )

    def remove(self, address: str, via: str) -> None:
        """Take a dead member out of the ring, asking the node `via` (any live member).
        Refused (ClusterRefused) while `via` holds it up: a live node should leave."""
        deadline = self._requests.deadline_s
        self._call(
            lambda _: self._admin(via).Remove(pb.RemoveRequest(address=address), timeout=deadline),
            [via],
        )

    def drain(
        self, node_address: str, timeout: float = 0.0, stay: bool = False
    ) -> pb.DrainResponse:
        """Drain the node (see kvstore.node.drain): it refuses new client requests, finishes
        those in flight, delivers its hints within `timeout` seconds (0: the node's default,
        10 s) and, unless `stay`, then stops. The call waits for all that."""
        request = pb.DrainRequest(timeout_ms=round(timeout * 1000), stay=stay)
        # The node answers once the drain is done: wait past its timeout (or its default).
        deadline = self._requests.deadline_s + (timeout or 10.0)
        response: pb.DrainResponse = self._call(
            lambda _: self._admin(node_address).Drain(request, timeout=deadline),
            [node_address],
        )
        return response

    def repair(
        self, node_address: str, partitions: Sequence[int] = (), timeout: float = 0.0
    ) -> pb.RepairResponse:
        """Run anti-entropy now on the node with every other replica of the partitions
        named (all it holds when none are), within `timeout` seconds (0: the node's default,
        60 s); answers what it compared and repaired."""
        request = pb.RepairRequest(partitions=list(partitions), timeout_ms=round(timeout * 1000))
        deadline = self._requests.deadline_s + (timeout or 60.0)
        response: pb.RepairResponse = self._call(
            lambda _: self._admin(node_address).Repair(request, timeout=deadline),
            [node_address],
        )
        return response

    def locate(self, node_address: str, key: Key) -> pb.LocateResponse:
        """Where `key` lives by the node's ring: its primaries (and those of a pending ring)."""
        request = pb.LocateRequest(key=key_bytes(key))
        deadline = self._requests.deadline_s
        response: pb.LocateResponse = self._call(
            lambda _: self._admin(node_address).Locate(request, timeout=deadline),
            [node_address],
        )
        return response

    def health(self, node_address: str, service: str = "") -> str:
        """The node's answer to the standard grpc.health.v1 check of `service` ("": the
        port as a whole; kvstore.rpc.server names what each port reports): SERVING once it
        knows a ring, NOT_SERVING before; SERVICE_UNKNOWN for a name the port does not
        report (raises TransportError if it does not answer at all)."""
        self._pool.stub(node_address)
        stub = health_pb2_grpc.HealthStub(self._pool.channels[node_address])
        request = health_pb2.HealthCheckRequest(service=service)
        deadline = self._requests.deadline_s
        try:
            response = stub.Check(request, timeout=deadline)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # a name the port does not report
                return "SERVICE_UNKNOWN"
            raise failure(exc, node_address)[0] from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._async.close())
        finally:
            self._loop.close()
            for channel in self._pool.take_channels():
                channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _async_client(
    seeds: str | Sequence[str],
    timeout: float,
    resolver: Resolver | None,
    tls: TLS | str | bool | None,
    token: str | None,
) -> AsyncClient:
    """Made on the loop thread, so its channels belong to that loop."""
    return AsyncClient(seeds, timeout, resolver, tls=tls, token=token)

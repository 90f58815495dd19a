"""etcd's v3 KV API over grpc.aio, with the stubs generated from proto/etcd (no etcd client
library): linearizable Range and Put, spread over the members' endpoints."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import grpc

from kvstore._pb.etcd import rpc_pb2 as etcd_pb
from kvstore._pb.etcd import rpc_pb2_grpc as etcd_grpc


class EtcdError(Exception):
    """A call etcd (or the connection to it) failed; the subclass names the gRPC status, so
    kvbench counts errors by kind (EtcdUnavailable, EtcdDeadlineExceeded, ...)."""

    code_name = "UNKNOWN"


def _class_name(code: grpc.StatusCode) -> str:
    return "Etcd" + "".join(part.capitalize() for part in code.name.split("_"))


_ERRORS: dict[Any, type[EtcdError]] = {
    code: type(_class_name(code), (EtcdError,), {"code_name": code.name})
    for code in grpc.StatusCode
}


def range_request(key: bytes) -> etcd_pb.RangeRequest:
    """A linearizable read of one key: serializable=False makes the member answering confirm
    with the leader (ReadIndex) that it has applied everything committed before the read, so
    it never returns a stale value (the default of etcd's own clients)."""
    return etcd_pb.RangeRequest(key=key, serializable=False)


def put_request(key: bytes, value: bytes) -> etcd_pb.PutRequest:
    """A write of one key; it returns once a majority has the entry in its fsynced Raft log
    and the leader has applied it."""
    return etcd_pb.PutRequest(key=key, value=value)


class EtcdKV:
    """One grpc.aio channel per member; calls go to the members in turn (round robin).

    Spread rather than sent to the leader, because that is what etcd's own client does (its
    balancer is round robin over the endpoints it is given) and what the cluster is built
    for: a follower forwards a Put to the leader as a Raft proposal and serves a linearizable
    Range after a ReadIndex round with it. It also loads every member, so each member's CPU
    per operation means something. Sending everything to the leader would save the follower
    hop on two thirds of the calls: etcd at its most favourable, not as deployed."""

    def __init__(self, endpoints: Sequence[str], timeout: float) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint (HOST:PORT)")
        self._timeout = timeout
        self._channels = [grpc.aio.insecure_channel(address) for address in endpoints]
        self._stubs = [etcd_grpc.KVStub(channel) for channel in self._channels]
        self._turn = itertools.cycle(range(len(self._stubs)))

    def _next(self) -> Any:
        return self._stubs[next(self._turn)]

    async def range(self, key: bytes) -> etcd_pb.RangeResponse:
        try:
            response: etcd_pb.RangeResponse = await self._next().Range(
                range_request(key), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _ERRORS.get(exc.code(), EtcdError)(exc.details()) from None
        return response

    async def put(self, key: bytes, value: bytes) -> etcd_pb.PutResponse:
        try:
            response: etcd_pb.PutResponse = await self._next().Put(
                put_request(key, value), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _ERRORS.get(exc.code(), EtcdError)(exc.details()) from None
        return response

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

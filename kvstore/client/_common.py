"""What the sync and async clients share: argument checks, requests, results, node order."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client.results import GetItem, GetResult, PutItem, PutResult, PutResultItem
from kvstore.errors import (
    BatchTooLarge,
    Draining,
    InvalidArgument,
    InvalidKey,
    InvalidOption,
    KvError,
    TransportError,
)
from kvstore.rpc.status import error_from_call, error_from_rpc, is_transport_failure
from kvstore.rpc.streams import field

Resolver = Callable[[list[bytes]], bytes]
Key = bytes | str
# What put_many takes: PutItem, or (key, value) / (key, value, context).
PutLike = PutItem | tuple[Key, bytes | None] | tuple[Key, bytes | None, bytes | None]
# What delete_many takes: a key, or (key, context).
DeleteLike = Key | tuple[Key, bytes | None]

# The fields of a ClientCall (kvstore.rpc.streams adds the id): get = 2, put = 3,
# get_many = 4, put_many = 5, each a message.
_GET_CALL = b"\x12"
_PUT_CALL = b"\x1a"
_GET_MANY_CALL = b"\x22"
_PUT_MANY_CALL = b"\x2a"

# The client's deadline runs a little past the server's, so the server's own, more precise
# answer (e.g. "1 of 2 replicas answered") arrives instead of a bare DEADLINE_EXCEEDED.
DEADLINE_SLACK_S = 0.5
MAX_TIMEOUT_S = 600.0
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
# The most items a batch may have at all (a node's own max_batch_items, 1,000 by default, may
# be lower: it refuses a larger batch with BatchTooLarge).
MAX_BATCH_ITEMS = 10_000
# A write id: random, so two clients never pick the same one (a node takes up to 64 bytes).
WRITE_ID_BYTES = 16
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # A node that stopped answering (paused, cut off) is noticed within seconds: the calls
    # on its stream then fail instead of waiting out their deadlines one by one.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


def parse_seeds(seeds: str | Sequence[str]) -> list[str]:
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    addresses = [s.strip() for s in items if s and s.strip()]
    if not addresses:
        raise InvalidArgument("at least one seed address (HOST:PORT) is needed")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(f"seed must be HOST:PORT, got {address!r}")
    return addresses


def check_timeout(timeout: float) -> float:
    if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise InvalidOption(f"timeout must be in (0, {MAX_TIMEOUT_S}] seconds, got {timeout!r}")
    return float(timeout)


def key_bytes(key: Key) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    elif isinstance(key, bytearray | memoryview):
        key = bytes(key)
    if not isinstance(key, bytes):
        raise InvalidKey(f"key must be bytes or str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("key must not be empty")
    return key


def value_bytes(value: bytes) -> bytes:
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise InvalidArgument(f"value must be bytes, not {type(value).__name__}")
    return value


def context_bytes(context: bytes | None) -> bytes:
    if context is None:
        return b""
    if not isinstance(context, bytes):
        raise InvalidArgument(
            f"context must be the bytes a get or put returned, not {type(context).__name__}"
        )
    return context


def quorum_option(name: str, value: int | None) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOption(f"{name} must be a positive integer, got {value!r}")
    return value


class RequestBuilder:
    """Builds requests and reads responses; both clients send what this makes."""

    def __init__(self, seeds: str | Sequence[str], timeout: float, resolver: Resolver | None):
        self.addresses = parse_seeds(seeds)
        self.timeout = check_timeout(timeout)
        self.resolver = resolver
        self._next = itertools.count()

    def node_order(self) -> Iterator[str]:
        """Every node once, starting at a different one each call (spreads coordination)."""
        start = next(self._next) % len(self.addresses)
        return iter(self.addresses[start:] + self.addresses[:start])

    @property
    def timeout_ms(self) -> int:
        return int(self.timeout * 1000)

    @property
    def deadline_s(self) -> float:
        return self.timeout + DEADLINE_SLACK_S

    def call_timeout(self, timeout: float | None) -> float:
        """A call's own `timeout=` (checked), or the client's."""
        return self.timeout if timeout is None else check_timeout(timeout)

    def get_request(
        self, key: Key, r: int | None, sloppy: bool = True, timeout: float | None = None
    ) -> pb.GetRequest:
        return pb.GetRequest(
            key=key_bytes(key),
            r=quorum_option("r", r),
            timeout_ms=_ms(self.call_timeout(timeout)),
            strict=not sloppy,
        )

    def put_request(
        self,
        key: Key,
        value: bytes | None,
        context: bytes | None,
        w: int | None,
        sloppy: bool = True,
        return_body: bool = False,
        timeout: float | None = None,
    ) -> pb.PutRequest:
        """Each write gets a fresh write id: its retries (on any node) carry the same one,
        so a replica that already applied it does not apply it again."""
        if not isinstance(return_body, bool):
            raise InvalidOption(f"return_body must be True or False, got {return_body!r}")
        return pb.PutRequest(
            key=key_bytes(key),
            value=b"" if value is None else value_bytes(value),
            tombstone=value is None,
            context=context_bytes(context),
            w=quorum_option("w", w),
            timeout_ms=_ms(self.call_timeout(timeout)),
            strict=not sloppy,
            return_body=return_body,
            write_id=os.urandom(WRITE_ID_BYTES),
        )

    def get_many_request(
        self, keys: Iterable[Key], r: int | None, sloppy: bool = True, timeout: float | None = None
    ) -> pb.GetManyRequest:
        encoded = [key_bytes(key) for key in keys]
        check_batch(len(encoded))
        return pb.GetManyRequest(
            keys=encoded,
            r=quorum_option("r", r),
            timeout_ms=_ms(self.call_timeout(timeout)),
            strict=not sloppy,
        )

    def put_many_request(
        self,
        items: Iterable[PutLike],
        w: int | None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> pb.PutManyRequest:
        requests = []
        for item in items:
            put = put_item(item)
            requests.append(
                self.put_request(put.key, put.value, put.context, None, sloppy, put.return_body)
            )
        check_batch(len(requests))
        return pb.PutManyRequest(
            items=requests,
            w=quorum_option("w", w),
            timeout_ms=_ms(self.call_timeout(timeout)),
            strict=not sloppy,
        )

    def delete_many_request(
        self,
        items: Iterable[DeleteLike],
        w: int | None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> pb.PutManyRequest:
        deletes: list[PutLike] = []
        for item in items:
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise InvalidArgument("delete_many takes keys or (key, context) pairs")
                deletes.append(PutItem(item[0], None, item[1]))
            else:
                deletes.append(PutItem(item, None))
        return self.put_many_request(deletes, w, sloppy, timeout)

    def get_many_result(
        self, response: pb.GetManyResponse, count: int, resolver: Resolver | None
    ) -> list[GetItem]:
        _check_count(len(response.items), count)
        return [
            error_from_call(item.error)
            if item.HasField("error")
            else self.get_result(item.ok, resolver)
            for item in response.items
        ]

    def put_many_result(
        self, response: pb.PutManyResponse, count: int, resolver: Resolver | None
    ) -> list[PutResultItem]:
        _check_count(len(response.items), count)
        return [
            error_from_call(item.error)
            if item.HasField("error")
            else self.put_result(item.ok, resolver)
            for item in response.items
        ]

    def _resolved(self, values: list[bytes], resolver: Resolver | None) -> list[bytes]:
        resolve = resolver or self.resolver
        if resolve is not None and len(values) > 1:
            return [value_bytes(resolve(values))]
        return values

    def get_result(self, response: pb.GetResponse, resolver: Resolver | None) -> GetResult:
        values = self._resolved(list(response.values), resolver)
        return GetResult(values=values, context=response.context, found=response.found)

    def put_result(self, response: pb.PutResponse, resolver: Resolver | None) -> PutResult:
        values = self._resolved(list(response.values), resolver)
        return PutResult(context=response.context, values=values)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def put_item(item: PutLike) -> PutItem:
    if isinstance(item, PutItem):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        return PutItem(*item)
    raise InvalidArgument(
        f"put_many takes PutItem or (key, value[, context]) tuples, not {type(item).__name__}"
    )


def check_batch(items: int) -> None:
    if items > MAX_BATCH_ITEMS:
        raise BatchTooLarge(f"a batch of {items} items; at most {MAX_BATCH_ITEMS} are allowed")


def _check_count(got: int, sent: int) -> None:
    if got != sent:
        raise KvError(f"the node answered {got} items for a batch of {sent}")


# A call on a client stream: the request message in its ClientCall field.
def get_call(request: pb.GetRequest) -> bytes:
    return field(_GET_CALL, request.SerializeToString())


def put_call(request: pb.PutRequest) -> bytes:
    return field(_PUT_CALL, request.SerializeToString())


def get_many_call(request: pb.GetManyRequest) -> bytes:
    return field(_GET_MANY_CALL, request.SerializeToString())


def put_many_call(request: pb.PutManyRequest) -> bytes:
    return field(_PUT_MANY_CALL, request.SerializeToString())


def failure(exc: grpc.RpcError, address: str) -> tuple[KvError, bool]:
    """The error an RPC failure stands for, and whether another node may be tried (none
    could be reached, or the node refused it untouched as it drains)."""
    error = error_from_rpc(exc, address)
    return error, is_transport_failure(exc) or isinstance(error, Draining)


def no_node_answered(errors: list[KvError]) -> TransportError:
    detail = "; ".join(str(e) for e in errors)
    return TransportError(f"no node could be reached: {detail}")

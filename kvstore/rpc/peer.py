"""The peer transport over gRPC: long-lived channels to other nodes and every node-to-node
message over them (kvstore.core.transport.PeerTransport).

The request path's calls (replica reads, merges, forwarded puts) ride one long-lived stream
per peer (kvstore.rpc.streams), many calls per message; the background exchanges (gossip,
anti-entropy, handoff, hint delivery, tombstone GC) are few and large, and stay unary calls
on channels of their own."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.cluster import ClusterView
from kvstore.core.requests import ForwardedPut, PutAnswer
from kvstore.core.transport import PeerFailure, PeerUnreachable, RecordPage
from kvstore.core.versions import KeyState
from kvstore.errors import StorageError
from kvstore.rpc import translate
from kvstore.rpc.channels import ChannelPool
from kvstore.rpc.status import error_from_call
from kvstore.rpc.streams import (
    MESSAGE_TARGET_BYTES,
    CallStream,
    CallTooLarge,
    NeverSent,
    OutcomeUnknown,
    stream_to,
)
from kvstore.rpc.wire import (
    MAX_ITEMS_PER_CALL,
    forward_call,
    merge_call_of_request,
    merge_many_call,
    merge_request_bytes,
    read_call_of_request,
    read_many_call,
    read_request_bytes,
)
from kvstore.storage import paging
from kvstore.storage.codec import (
    cluster_from_proto,
    cluster_to_proto,
    decode_record,
    state_from_proto,
    state_to_proto,
)

__all__ = ["PEER_INFLIGHT_BYTES", "PeerClient", "PeerFailure", "channel_options"]

_STREAM = "/kvstore.v1.Peer/Stream"
# The bytes of calls to one peer that may be queued or unanswered at once: past it, calls
# wait (within their deadlines) for room, so a slow or paused peer holds at most this much
# of this node's memory.
PEER_INFLIGHT_BYTES = 32 * 1024 * 1024


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
    """The gRPC PeerTransport: one channel and one stream per peer, created on first use and
    kept for the node's lifetime (a broken stream is replaced on the next call)."""

    def __init__(
        self,
        max_message_bytes: int,
        routes: Mapping[str, str] | None = None,
        max_inflight_bytes: int = PEER_INFLIGHT_BYTES,
        counters: Counter[str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """`credentials`: this node's certificate and the cluster CA (mutual TLS with every
        peer); None between nodes without TLS."""
        # Messages and calls sent on the peer streams (peer_stream_*_sent), for operators.
        self._counters = counters
        options = channel_options(max_message_bytes)
        self._max_message_bytes = max_message_bytes
        self._max_inflight_bytes = max(max_inflight_bytes, max_message_bytes)
        # A peer is named by its advertised address; `routes` may say to dial another.
        dial = dict(routes or {})

        def open_channel(address: str, options: list[tuple[str, int]]) -> grpc.aio.Channel:
            target = dial.get(address, address)
            if credentials is None:
                return grpc.aio.insecure_channel(target, options=options)
            return grpc.aio.secure_channel(target, credentials, options=options)

        self._pool = ChannelPool(
            lambda address: open_channel(address, options), lambda channel: channel
        )
        self._streams: dict[str, CallStream[pb.PeerResult]] = {}
        self._turns: dict[str, _Turn] = {}
        # Closes of departed peers' streams and channels under way (`retain`).
        self._closing: set[asyncio.Task[None]] = set()
        # Background work (gossip, anti-entropy, hint delivery, handoff) has channels of its
        # own: calling a peer that is not up yet (at start-up, after a crash) puts a channel
        # into reconnect backoff, where every call on it fails at once for up to two
        # seconds; the replica calls of client requests must not inherit that.
        # (gRPC shares connections between channels of equal settings unless told not to.)
        control_options = [*options, ("grpc.use_local_subchannel_pool", 1)]
        self._control = ChannelPool(
            lambda address: open_channel(address, control_options), pb_grpc.PeerStub
        )

    def stream(self, address: str) -> CallStream[pb.PeerResult]:
        """The stream of request-path calls to `address` (opened on its first call)."""
        stream = self._streams.get(address)
        if stream is None:
            stream = self._streams[address] = stream_to(
                f"peer {address}",
                self._pool.stub(address),
                _STREAM,
                pb.PeerResults,
                # Waits for a connection that is coming back (a peer restarting) within
                # each call's deadline, rather than failing while the channel backs off.
                wait_for_ready=True,
                max_inflight_bytes=self._max_inflight_bytes,
                max_message_bytes=self._max_message_bytes,
                counters=self._counters,
                counter_prefix="peer_stream_",
            )
        return stream

    def _submit(
        self, address: str, body: bytes, timeout: float, fail_fast: bool = False
    ) -> asyncio.Future[pb.PeerResult]:
        return self.stream(address).submit(body, timeout, fail_fast)

    def read(
        self, address: str, key: bytes, timeout: float, data_only: bool = False
    ) -> asyncio.Future[KeyState | None]:
        return self._turn(address).add(_READ, read_request_bytes(key, data_only), timeout)

    def merge(
        self, address: str, key: bytes, record: bytes, timeout: float, hint_for: str = ""
    ) -> asyncio.Future[None]:
        request = merge_request_bytes(key, record, hint_for)
        return self._turn(address).add(_MERGE, request, timeout)

    def _turn(self, address: str) -> _Turn:
        turn = self._turns.get(address)
        if turn is None:
            turn = self._turns[address] = _Turn(self, address)
        return turn

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

    def forward_put(
        self, address: str, forward: ForwardedPut, timeout: float
    ) -> asyncio.Future[PutAnswer]:
        """PeerUnreachable when the put never left (no stream to the peer: it is down or
        refusing); PeerFailure when it left and no answer came (in time, or before the
        stream broke): outcome unknown; any other failure is the kvstore error the peer
        answered with."""
        body = forward_call(translate.forward_put_request(forward).SerializeToString())
        return _then(
            self._submit(address, body, timeout, fail_fast=True),
            lambda result: _forwarded(result, address),
        )

    def retain(self, addresses: Collection[str]) -> None:
        keep = set(addresses)
        gone = {*self._streams, *self._turns, *self._pool.channels, *self._control.channels}
        gone -= keep
        for address in gone:
            self._turns.pop(address, None)
            stream = self._streams.pop(address, None)
            channels = [c for c in (self._pool.take(address), self._control.take(address)) if c]
            task = asyncio.get_running_loop().create_task(_close(stream, channels))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.close()
        for channel in self._pool.take_channels() + self._control.take_channels():
            await channel.close()


async def _close(stream: CallStream[pb.PeerResult] | None, channels: list[Any]) -> None:
    if stream is not None:
        await stream.close()
    for channel in channels:
        await channel.close()


class _Kind:
    """How one kind of replica call is sent alone and many at once, and read back."""

    def __init__(
        self,
        alone: Callable[[bytes], bytes],
        many: Callable[[list[bytes]], bytes],
        answer: Callable[[pb.PeerResult], Any],
        answers: Callable[[pb.PeerResult], list[Any]],
    ) -> None:
        self.alone = alone
        self.many = many
        self.answer = answer
        self.answers = answers


# How much later than its own deadline an item of a shared call may be failed.
_DEADLINE_SLACK_S = 0.05
# What an item adds to a shared call besides its request: a tag and a length.
_ITEM_FRAMING = 6


class _Turn:
    """The reads and the merges this node has for one peer in one turn of its event loop,
    sent at the end of the turn as one call each (read_many, merge_many): a coordinator
    serving many requests at once asks each peer once, and the peer answers once. A lone
    call goes as itself. Each item keeps its own deadline and gets its own answer or error;
    the shared call waits for the latest of their deadlines (an item whose deadline is more
    than _DEADLINE_SLACK_S earlier gets a timer of its own)."""

    __slots__ = ("_address", "_client", "_pending", "_scheduled")

    def __init__(self, client: PeerClient, address: str) -> None:
        self._client = client
        self._address = address
        self._pending: dict[_Kind, list[tuple[bytes, asyncio.Future[Any], float]]] = {}
        self._scheduled = False

    def add(self, kind: _Kind, request: bytes, timeout: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.setdefault(kind, []).append((request, future, loop.time() + timeout))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        loop = asyncio.get_running_loop()
        now = loop.time()
        for kind, items in pending.items():
            items = [item for item in items if not item[1].done()]  # abandoned meanwhile
            for share in _shares(items):
                self._send_share(kind, share, loop, now)

    def _send_share(
        self,
        kind: _Kind,
        items: list[tuple[bytes, asyncio.Future[Any], float]],
        loop: asyncio.AbstractEventLoop,
        now: float,
    ) -> None:
        timeout = max(max(deadline for _, _, deadline in items) - now, 0.001)
        if len(items) == 1:
            self.alone(kind, *items[0])
            return
        body = kind.many([request for request, _, _ in items])
        call = self._client._submit(self._address, body, timeout)
        call.add_done_callback(partial(_share, self, kind, items))
        for _, future, deadline in items:
            # An item whose deadline comes well before the shared call's gets a timer of its
            # own (items of one turn mostly share a deadline, give or take a little).
            if deadline < now + timeout - _DEADLINE_SLACK_S:
                timer = loop.call_at(deadline, _expire_item, future)
                future.add_done_callback(partial(_cancel_timer, timer))

    def alone(
        self, kind: _Kind, request: bytes, future: asyncio.Future[Any], deadline: float
    ) -> None:
        """Send one item as a call of its own."""
        timeout = max(deadline - asyncio.get_running_loop().time(), 0.001)
        _chain(self._client._submit(self._address, kind.alone(request), timeout),
               kind.answer, future)  # fmt: skip


def _shares(
    items: list[tuple[bytes, asyncio.Future[Any], float]],
) -> list[list[tuple[bytes, asyncio.Future[Any], float]]]:
    """The items split into calls of at most MAX_ITEMS_PER_CALL items and about
    MESSAGE_TARGET_BYTES: large neighbours never make a shared call too large to send."""
    shares: list[list[tuple[bytes, asyncio.Future[Any], float]]] = []
    share: list[tuple[bytes, asyncio.Future[Any], float]] = []
    size = 0
    for item in items:
        length = len(item[0]) + _ITEM_FRAMING
        if share and (len(share) >= MAX_ITEMS_PER_CALL or size + length > MESSAGE_TARGET_BYTES):
            shares.append(share)
            share, size = [], 0
        share.append(item)
        size += length
    if share:
        shares.append(share)
    return shares


def _share(
    turn: _Turn,
    kind: _Kind,
    items: list[tuple[bytes, asyncio.Future[Any], float]],
    call: asyncio.Future[Any],
) -> None:
    """A shared call ended: each item its own answer (or the call's failure); an item the
    peer left unread because the shared answer was full is sent again alone."""
    failure: BaseException | None = None
    if call.cancelled():
        failure = PeerFailure("cancelled")
    elif (exc := call.exception()) is not None:
        failure = _peer_failure(exc)
    answers: list[Any] = []
    if failure is None:
        try:
            answers = kind.answers(call.result())
            if len(answers) != len(items):
                raise PeerFailure(f"{len(answers)} answers to {len(items)} items")
        except Exception as exc:
            failure = exc
    for index, (request, future, deadline) in enumerate(items):
        if future.done():
            continue
        outcome = failure if failure is not None else answers[index]
        if isinstance(outcome, PeerFailure) and outcome.code == "ABORTED":
            turn.alone(kind, request, future, deadline)
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _cancel_timer(timer: asyncio.TimerHandle, _: asyncio.Future[Any]) -> None:
    timer.cancel()


def _expire_item(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(
            PeerFailure("DEADLINE_EXCEEDED: no answer by the deadline", "DEADLINE_EXCEEDED")
        )


T = TypeVar("T")


def _then(
    call: asyncio.Future[pb.PeerResult], answer: Callable[[pb.PeerResult], T]
) -> asyncio.Future[T]:
    """A future of the call's answer (`answer` of its result; a stream failure as the
    transport's PeerFailure), chained by callbacks: no task per replica call. Cancelling it
    abandons the call."""
    return _chain(call, answer, asyncio.get_running_loop().create_future())


def _chain(
    call: asyncio.Future[pb.PeerResult],
    answer: Callable[[pb.PeerResult], T],
    outcome: asyncio.Future[T],
) -> asyncio.Future[T]:
    """`outcome` gets the call's answer (see `_then`)."""

    def ended(done: asyncio.Future[pb.PeerResult]) -> None:
        if outcome.done():
            return
        if done.cancelled():
            outcome.cancel()
            return
        exc = done.exception()
        if exc is not None:
            outcome.set_exception(_peer_failure(exc))
            return
        try:
            outcome.set_result(answer(done.result()))
        except Exception as refused:
            outcome.set_exception(refused)

    call.add_done_callback(ended)
    outcome.add_done_callback(lambda done: call.cancel() if done.cancelled() else None)
    return outcome


def _peer_failure(exc: BaseException) -> BaseException:
    """A stream's failure as the transport's: what a caller may retry elsewhere is exact."""
    if isinstance(exc, NeverSent):
        return PeerUnreachable(str(exc))
    if isinstance(exc, OutcomeUnknown):
        code = "DEADLINE_EXCEEDED" if exc.deadline else "UNAVAILABLE"
        return PeerFailure(f"{code}: {exc}", code)
    if isinstance(exc, CallTooLarge):
        return PeerFailure(str(exc), "RESOURCE_EXHAUSTED")
    return exc


def _read_state(result: pb.PeerResult) -> KeyState | None:
    if result.WhichOneof("result") != "read":
        raise _refused(result)
    reply = result.read
    return _peer_record(reply.record) if reply.found else None


def _peer_record(record: bytes) -> KeyState:
    """A record a peer answered with, read by the native codec (checked as from disk)."""
    try:
        return decode_record(record)
    except StorageError as exc:
        raise PeerFailure(f"bad record: {exc}") from exc


def _merged(result: pb.PeerResult) -> None:
    if result.WhichOneof("result") != "merge":
        raise _refused(result)


def _item_failure(error: pb.CallError) -> PeerFailure | None:
    return PeerFailure(f"{error.code}: {error.message}", error.code) if error.code else None


def _read_states(result: pb.PeerResult) -> list[KeyState | PeerFailure | None]:
    if result.WhichOneof("result") != "read_many":
        raise _refused(result)
    answers = result.read_many
    states: list[KeyState | PeerFailure | None] = []
    for reply, error in zip(answers.items, answers.errors, strict=True):
        failure = _item_failure(error)
        if failure is not None:
            states.append(failure)
        elif not reply.found:
            states.append(None)
        else:
            try:
                states.append(_peer_record(reply.record))
            except PeerFailure as bad:
                states.append(bad)
    return states


def _merged_many(result: pb.PeerResult) -> list[PeerFailure | None]:
    if result.WhichOneof("result") != "merge_many":
        raise _refused(result)
    return [_item_failure(error) for error in result.merge_many.errors]


_READ = _Kind(read_call_of_request, read_many_call, _read_state, _read_states)
_MERGE = _Kind(merge_call_of_request, merge_many_call, _merged, _merged_many)


def _forwarded(result: pb.PeerResult, address: str) -> PutAnswer:
    kind = result.WhichOneof("result")
    if kind == "error":
        raise error_from_call(result.error, address)
    if kind != "forward":
        raise PeerFailure(f"{address} answered a forwarded put with {kind}")
    return translate.put_answer(result.forward)


def _refused(result: pb.PeerResult) -> PeerFailure:
    """A read's or merge's failure as the peer answered it (its status code's name)."""
    if result.WhichOneof("result") == "error":
        error = result.error
        return PeerFailure(f"{error.code}: {error.message}", error.code)
    return PeerFailure(f"unexpected answer {result.WhichOneof('result')}")


def _failure(exc: grpc.aio.AioRpcError) -> PeerFailure:
    name, detail = exc.code().name, exc.details() or ""
    return PeerFailure(f"{name}: {detail}" if detail else name, name)

"""gRPC servicers: translate a request to domain values, call a role, translate the answer
or the error back. The roles are reached through the small interfaces below (the node's
Coordinator, Replica, Admin, Gossip, AntiEntropy and Handoff provide them), so this layer
depends on nothing above it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.cluster import ClusterView, InvalidView
from kvstore.core.limits import DEFAULT_LIMITS, Limits
from kvstore.core.maintenance import DrainReport, RepairReport
from kvstore.core.requests import (
    ForwardedPut,
    GetAnswer,
    Location,
    NodeInfo,
    NodeStatus,
    PutAnswer,
    PutCommand,
    Topology,
)
from kvstore.core.transport import RecordPage
from kvstore.core.versions import KeyState
from kvstore.errors import (
    ClusterRefused,
    InternalError,
    InvalidArgument,
    KvError,
    Overloaded,
    StorageError,
    Unavailable,
)
from kvstore.rpc import auth, translate
from kvstore.rpc.admission import Admission
from kvstore.rpc.badinput import call_name, internal_error
from kvstore.rpc.observe import NO_METRICS, RequestMetrics
from kvstore.rpc.session import StreamSession
from kvstore.rpc.status import abort, call_error
from kvstore.rpc.wire import MAX_ITEMS_PER_CALL
from kvstore.storage.codec import (
    cluster_from_proto,
    cluster_to_proto,
    decode_record,
    state_from_proto,
)
from kvstore.storage.codec import state_to_proto as record_of

log = logging.getLogger(__name__)
T = TypeVar("T")


# ---- what the servicers need of the roles ----


class Coordinating(Protocol):
    async def get(self, key: bytes, r: int, timeout_ms: int, strict: bool) -> GetAnswer: ...
    async def put(self, command: PutCommand, hops: int = 0) -> PutAnswer: ...
    async def forwarded_put(self, forward: ForwardedPut) -> PutAnswer: ...
    async def get_many(
        self, keys: Sequence[bytes], r: int, timeout_ms: int, strict: bool
    ) -> list[GetAnswer | KvError]: ...
    async def put_many(self, commands: Sequence[PutCommand]) -> list[PutAnswer | KvError]: ...


class Replicating(Protocol):
    def local_get(self, key: bytes) -> GetAnswer: ...
    def read(self, key: bytes, data_only: bool = False) -> KeyState | None: ...
    def read_record(self, key: bytes, data_only: bool = False) -> bytes | None: ...
    def merge(self, key: bytes, state: KeyState, hint_for: str = "") -> Awaitable[None]: ...
    def merge_batch(self, items: list[tuple[bytes, KeyState]]) -> Awaitable[None]: ...
    def purge(self, key: bytes, state: KeyState) -> bool: ...


class Gossiping(Protocol):
    def on_push(self, view: ClusterView, sender: str) -> ClusterView: ...


class TreeServing(Protocol):
    def hashes(self, partition: int, level: int, indices: Sequence[int]) -> list[bytes]: ...
    def segment_page(self, partition: int, segments: Sequence[int], after: bytes) -> RecordPage: ...


class PartitionServing(Protocol):
    def partition_page(self, partition: int, after: bytes, limit: int) -> RecordPage: ...


class Administering(Protocol):
    def info(self) -> NodeInfo: ...
    def locate(self, key: bytes) -> Location: ...
    def status(self) -> NodeStatus: ...
    def join(self) -> None: ...
    def leave(self) -> None: ...
    def remove(self, address: str) -> None: ...
    def topology(self) -> Topology: ...


class ClientGate(Protocol):
    """Whether the node takes client calls now (node.drain): `enter` raises Draining when
    it does not; each call that entered `leave`s when it ends."""

    def enter(self) -> None: ...
    def leave(self) -> None: ...


class Draining(Protocol):
    async def drain(self, timeout_ms: int, stay: bool) -> DrainReport: ...
    def answered(self, report: DrainReport) -> None: ...


class Repairing(Protocol):
    async def repair(self, partitions: Sequence[int], timeout_ms: int) -> RepairReport: ...


class _OpenGate:
    """The gate of a node that never drains (tests, tools): every call enters."""

    def enter(self) -> None:
        pass

    def leave(self) -> None:
        pass


# ---- translation helpers ----


async def _answer(
    context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]], name: str = ""
) -> T:
    try:
        return await call()
    except KvError as exc:
        await abort(context, exc)
    except Exception as exc:
        internal_error(log, name or call_name(call), exc)  # rate-limited: a caller can trigger it
        await abort(context, InternalError(f"{type(exc).__name__}: {exc}"))
    raise AssertionError("abort returned")  # context.abort always raises


def _peer_state(record: pb.KeyRecord) -> KeyState:
    try:
        return state_from_proto(record)
    except ValueError as exc:
        raise InternalError(f"peer sent a bad record: {exc}") from exc


def _peer_record(record: bytes) -> KeyState:
    """A record a peer sent as bytes, read by the native codec (and checked as strictly as
    one from disk)."""
    try:
        return decode_record(record)
    except StorageError as exc:
        raise InternalError(f"peer sent a bad record: {exc}") from exc


def _encoded_read(record: bytes | None) -> pb.EncodedRead:
    if record is None:
        return pb.EncodedRead(found=False)
    return pb.EncodedRead(found=True, record=record)


def _keyed_states(items: Iterable[pb.ReplicaMergeRequest]) -> list[tuple[bytes, KeyState]]:
    return [(item.key, _peer_state(item.record)) for item in items]


def _keyed_records(items: Iterable[tuple[bytes, KeyState]]) -> list[pb.KeyedRecord]:
    return [pb.KeyedRecord(key=key, record=record_of(state)) for key, state in items]


_NOT_READ = pb.EncodedRead()


def _failure(exc: BaseException) -> pb.CallError:
    """A call's failure as its result carries it; anything but a KvError is a bug here."""
    if isinstance(exc, KvError):
        return call_error(exc)
    if isinstance(exc, asyncio.CancelledError):
        return pb.CallError(code="CANCELLED", message="cancelled by the caller")
    internal_error(log, "a stream call", exc)  # rate-limited: a caller can trigger it
    return call_error(InternalError(f"{type(exc).__name__}: {exc}"))


# A stream's calls that may be worked on at once: past it a call is answered
# RESOURCE_EXHAUSTED and the receiver stops reading the stream until some are answered (the
# caller is then held back by flow control).
MAX_PENDING_CALLS = 4096
# Bytes of records one read_many answers with: the items past it are answered ABORTED (read
# them alone), so a turn's reads of large values never make an answer too large to send.
READ_MANY_ANSWER_BYTES = 4 * 1024 * 1024
# The default message limit of a servicer's streams (the node passes its own).
DEFAULT_MESSAGE_BYTES = 32 * 1024 * 1024


def _peer_calls(message: pb.PeerCalls) -> Sequence[pb.PeerCall]:
    return message.calls  # type: ignore[no-any-return]


def _peer_cancel(call: pb.PeerCall) -> int | None:
    return call.id if call.HasField("cancel") else None


def _peer_results(results: list[pb.PeerResult]) -> pb.PeerResults:
    return pb.PeerResults(results=results)


def _peer_failed(call_id: int, error: pb.CallError) -> pb.PeerResult:
    return pb.PeerResult(id=call_id, error=error)


def _call_id(call: pb.PeerCall | pb.ClientCall) -> int:
    return int(call.id)


# ---- the services ----


class KVServicer(pb_grpc.KVServicer):
    def __init__(
        self,
        coordinator: Coordinating,
        replica: Replicating,
        counters: Counter[str] | None = None,
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
        limits: Limits = DEFAULT_LIMITS,
        receive_bytes: int = 0,
        admin: Administering | None = None,
        metrics: RequestMetrics = NO_METRICS,
        gate: ClientGate | None = None,
    ) -> None:
        self._gate: ClientGate = gate or _OpenGate()
        self._coordinator = coordinator
        self._metrics = metrics
        self._replica = replica
        # What KV.Topology answers from (None: a node that does not serve it).
        self._admin = admin
        self._max_message_bytes = max_message_bytes
        # The client port's frame limit, announced to a stream's client (its messages of
        # calls must fit); results may be larger (a key's every sibling).
        self._receive_bytes = receive_bytes or max_message_bytes
        # Streams' messages and calls (client_stream_*): how well calls share messages.
        self._counters: Counter[str] = Counter() if counters is None else counters
        self._admission = Admission(
            limits.max_inflight_requests, limits.max_inflight_request_bytes, self._counters
        )

    async def _admitted(
        self,
        context: grpc.aio.ServicerContext,
        operation: str,
        items: int,
        size: int,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        """`call` within the node's bound on requests in flight (Overloaded past it), while
        the node takes client calls (Draining otherwise)."""
        started = time.monotonic()
        try:
            self._gate.enter()
        except KvError as exc:
            self._metrics.record(operation, exc, time.monotonic() - started)
            await abort(context, exc)
        try:
            try:
                self._admission.enter(items, size)
            except Overloaded as exc:
                self._metrics.record(operation, exc, time.monotonic() - started)
                await abort(context, exc)
            try:
                return await _answer(
                    context, partial(self._timed, operation, started, call), call_name(call)
                )
            finally:
                self._admission.leave(items, size, (time.monotonic() - started) * 1000)
        finally:
            self._gate.leave()

    async def _timed(self, operation: str, started: float, call: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await call()
        except BaseException as exc:
            self._metrics.record(operation, exc, time.monotonic() - started)
            raise
        self._metrics.record(operation, None, time.monotonic() - started)
        return result

    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        async def call() -> pb.GetResponse:
            answer = await self._coordinator.get(
                request.key, request.r, request.timeout_ms, request.strict
            )
            return translate.get_response(answer)

        return await self._admitted(context, "get", 1, request.ByteSize(), call)

    async def Put(
        self, request: pb.PutRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutResponse:
        async def call() -> pb.PutResponse:
            answer = await self._coordinator.put(translate.put_command(request))
            return translate.put_response(answer)

        operation = "delete" if request.tombstone else "put"
        return await self._admitted(context, operation, 1, request.ByteSize(), call)

    async def GetMany(
        self, request: pb.GetManyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetManyResponse:
        items = max(len(request.keys), 1)
        self._metrics.batch("get_many", len(request.keys))
        return await self._admitted(
            context, "get_many", items, request.ByteSize(), partial(self._get_many, request)
        )

    async def PutMany(
        self, request: pb.PutManyRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutManyResponse:
        items = max(len(request.items), 1)
        self._metrics.batch("put_many", len(request.items))
        return await self._admitted(
            context, "put_many", items, request.ByteSize(), partial(self._put_many, request)
        )

    async def Topology(
        self, request: pb.TopologyRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopologyResponse:
        return await _topology(self._admin, context)

    async def Stream(
        self, request_iterator: AsyncIterator[pb.ClientCalls], context: grpc.aio.ServicerContext
    ) -> None:
        """A client's calls, many per message, each answered when it is done (in any order);
        a cancel from the client stops one. A draining node opens no new stream (the client
        sends to another node); on an open one it refuses each new call."""
        try:
            self._gate.enter()
        except KvError as exc:
            await abort(context, exc)
        self._gate.leave()  # the stream's calls are counted one by one
        session: StreamSession[pb.ClientCall, pb.ClientResult] = StreamSession(
            context,
            _client_results,
            _client_failed,
            MAX_PENDING_CALLS,
            self._max_message_bytes,
            self._counters,
            "client_stream_",
            announce_bytes=self._receive_bytes,
        )
        await session.serve(
            request_iterator, _client_calls, _client_cancel, _call_id, self._on_call
        )

    def _on_call(
        self, call: pb.ClientCall, session: StreamSession[pb.ClientCall, pb.ClientResult]
    ) -> None:
        started = time.monotonic()
        kind = call.WhichOneof("call")
        items = 1
        operation = kind
        if kind == "get_many":
            items = max(len(call.get_many.keys), 1)
            self._metrics.batch(kind, len(call.get_many.keys))
        elif kind == "put_many":
            items = max(len(call.put_many.items), 1)
            self._metrics.batch(kind, len(call.put_many.items))
        elif kind == "put":
            operation = "delete" if call.put.tombstone else "put"
        elif kind != "get":
            error = call_error(InvalidArgument(f"unknown call {kind!r}"))
            session.reply(pb.ClientResult(id=call.id, error=error))
            return
        size = call.ByteSize()
        try:
            if kind in ("put", "put_many"):
                auth.require("write")  # the stream was opened by a reader at least
            self._gate.enter()
        except KvError as exc:  # PermissionDenied, Draining
            self._metrics.record(operation, exc, time.monotonic() - started)
            session.reply(pb.ClientResult(id=call.id, error=call_error(exc)))
            return
        try:
            self._admission.enter(items, size)
        except Overloaded as exc:
            self._gate.leave()
            self._metrics.record(operation, exc, time.monotonic() - started)
            session.reply(pb.ClientResult(id=call.id, error=call_error(exc)))
            return
        work: Awaitable[Any]
        if kind == "get":
            work = self._get(call.get)
        elif kind == "put":
            work = self._put(call.put)
        elif kind == "get_many":
            work = self._get_many(call.get_many)
        else:
            work = self._put_many(call.put_many)
        task = asyncio.ensure_future(work)
        session.track(call.id, task)
        task.add_done_callback(partial(_reply_client, session, call.id, kind))
        task.add_done_callback(partial(self._left, operation, items, size, started))

    def _left(
        self, operation: str, items: int, size: int, started: float, task: asyncio.Future[Any]
    ) -> None:
        elapsed = time.monotonic() - started
        self._admission.leave(items, size, elapsed * 1000)
        self._gate.leave()
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        self._metrics.record(operation, error, elapsed)

    async def _get(self, request: pb.GetRequest) -> pb.GetResponse:
        answer = await self._coordinator.get(
            request.key, request.r, request.timeout_ms, request.strict
        )
        return translate.get_response(answer)

    async def _put(self, request: pb.PutRequest) -> pb.PutResponse:
        return translate.put_response(await self._coordinator.put(translate.put_command(request)))

    async def _get_many(self, request: pb.GetManyRequest) -> pb.GetManyResponse:
        answers = await self._coordinator.get_many(
            list(request.keys), request.r, request.timeout_ms, request.strict
        )
        return translate.get_many_response(answers)

    async def _put_many(self, request: pb.PutManyRequest) -> pb.PutManyResponse:
        answers = await self._coordinator.put_many(translate.put_many_commands(request))
        return translate.put_many_response(answers)


class PeerServicer(pb_grpc.PeerServicer):
    def __init__(
        self,
        replica: Replicating,
        coordinator: Coordinating,
        gossip: Gossiping,
        trees: TreeServing,
        partitions: PartitionServing,
        admin: Administering,
        counters: Counter[str] | None = None,
        max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
    ) -> None:
        self._counters: Counter[str] = Counter() if counters is None else counters
        self._max_message_bytes = max_message_bytes
        self._replica = replica
        self._coordinator = coordinator
        self._gossip = gossip
        self._trees = trees
        self._partitions = partitions
        self._admin = admin

    async def ReplicaMergeBatch(
        self, request: pb.ReplicaMergeBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaMergeBatchResponse:
        async def call() -> pb.ReplicaMergeBatchResponse:
            await self._replica.merge_batch(_keyed_states(request.items))
            return pb.ReplicaMergeBatchResponse()

        return await _answer(context, call)

    async def Stream(
        self, request_iterator: AsyncIterator[pb.PeerCalls], context: grpc.aio.ServicerContext
    ) -> None:
        """The request path's replica calls from one peer, many per message: reads are
        answered at once, merges once the group commit made them durable, forwarded puts
        when their coordination ends (a cancel from the caller stops one)."""
        session: StreamSession[pb.PeerCall, pb.PeerResult] = StreamSession(
            context,
            _peer_results,
            _peer_failed,
            MAX_PENDING_CALLS,
            self._max_message_bytes,
            self._counters,
            "peer_stream_",
        )
        await session.serve(request_iterator, _peer_calls, _peer_cancel, _call_id, self._on_call)

    def _read_many(self, request: pb.ReplicaReadManyRequest) -> pb.EncodedReads:
        """Each item read on its own: an answer, or an error, per item. Past
        READ_MANY_ANSWER_BYTES of records the items left are answered ABORTED, for the caller
        to read alone."""
        _check_items(len(request.items))
        answers: list[pb.EncodedRead] = []
        errors: list[pb.CallError] = []
        budget = min(READ_MANY_ANSWER_BYTES, self._max_message_bytes // 4)
        answered = 0
        for item in request.items:
            try:
                record = self._replica.read_record(item.key, item.data_only)
            except Exception as exc:
                answers.append(_NOT_READ)
                errors.append(_failure(exc))
                continue
            size = len(record) if record else 0
            if answered and answered + size > budget:
                answers.append(_NOT_READ)
                errors.append(_TOO_LARGE_TO_SHARE)
                continue
            answers.append(_encoded_read(record))
            errors.append(_NO_ERROR)
            answered += size
        return pb.EncodedReads(items=answers, errors=errors)

    def _merge_many(
        self,
        items: Sequence[pb.EncodedMerge],
        answer: Callable[[list[pb.CallError]], None],
    ) -> None:
        """Each item merged on its own (the group commit makes them durable together);
        `answer` gets an error or none per item once every one has ended."""
        _check_items(len(items))
        if not items:
            answer([])
            return
        batch = _MergeMany(len(items), answer)
        for index, item in enumerate(items):
            try:
                durable = self._replica.merge(item.key, _peer_record(item.record), item.hint_for)
            except Exception as exc:
                batch.failed(index, exc)
                continue
            asyncio.ensure_future(durable).add_done_callback(partial(batch.durable, index))

    def _on_call(
        self, call: pb.PeerCall, session: StreamSession[pb.PeerCall, pb.PeerResult]
    ) -> None:
        call_id = call.id
        try:
            kind = call.WhichOneof("call")
            if kind == "read":
                request = call.read
                record = self._replica.read_record(request.key, request.data_only)
                session.reply(pb.PeerResult(id=call_id, read=_encoded_read(record)))
            elif kind == "merge":
                merge = call.merge
                durable = self._replica.merge(merge.key, _peer_record(merge.record), merge.hint_for)
                asyncio.ensure_future(durable).add_done_callback(
                    partial(_reply_merged, session, call_id)
                )
            elif kind == "read_many":
                session.reply(pb.PeerResult(id=call_id, read_many=self._read_many(call.read_many)))
            elif kind == "merge_many":
                self._merge_many(
                    call.merge_many.items, partial(_reply_merged_many, session, call_id)
                )
            elif kind == "forward":
                auth.require_node(call.forward.sender)
                task = asyncio.ensure_future(
                    self._coordinator.forwarded_put(translate.forwarded_put(call.forward))
                )
                session.track(call_id, task)
                task.add_done_callback(partial(_reply_forwarded, session, call_id))
            else:
                raise InvalidArgument(f"unknown peer call {kind!r}")
        except Exception as exc:
            session.reply(pb.PeerResult(id=call_id, error=_failure(exc)))

    async def Gossip(
        self, request: pb.GossipRequest, context: grpc.aio.ServicerContext
    ) -> pb.GossipResponse:
        async def call() -> pb.GossipResponse:
            auth.require_node(request.sender)
            try:
                view = cluster_from_proto(request.state)
                return pb.GossipResponse(
                    state=cluster_to_proto(self._gossip.on_push(view, request.sender[:256]))
                )
            except InvalidView as exc:
                raise InvalidArgument(f"gossip refused: {exc}") from None
            except ValueError as exc:  # ClusterMismatch too
                raise ClusterRefused(str(exc)) from exc

        return await _answer(context, call)

    async def TreeHashes(
        self, request: pb.TreeHashesRequest, context: grpc.aio.ServicerContext
    ) -> pb.TreeHashesResponse:
        async def call() -> pb.TreeHashesResponse:
            hashes = self._trees.hashes(request.partition, request.level, request.indices)
            return pb.TreeHashesResponse(hashes=hashes)

        return await _answer(context, call)

    async def SegmentRecords(
        self, request: pb.SegmentRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SegmentRecordsResponse:
        async def call() -> pb.SegmentRecordsResponse:
            records, last, done = self._trees.segment_page(
                request.partition, request.segments, request.after
            )
            return pb.SegmentRecordsResponse(records=_keyed_records(records), last=last, done=done)

        return await _answer(context, call)

    async def PartitionRecords(
        self, request: pb.PartitionRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PartitionRecordsResponse:
        async def call() -> pb.PartitionRecordsResponse:
            records, last, done = self._partitions.partition_page(
                request.partition, request.after, request.limit
            )
            return pb.PartitionRecordsResponse(
                records=_keyed_records(records), last=last, done=done
            )

        return await _answer(context, call)

    async def NodeInfo(
        self, request: pb.NodeInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeInfoResponse:
        return translate.node_info_response(self._admin.info())

    async def Purge(
        self, request: pb.PurgeRequest, context: grpc.aio.ServicerContext
    ) -> pb.PurgeResponse:
        async def call() -> pb.PurgeResponse:
            state = _peer_state(request.record)
            return pb.PurgeResponse(purged=self._replica.purge(request.key, state))

        return await _answer(context, call)


def _client_calls(message: pb.ClientCalls) -> Sequence[pb.ClientCall]:
    return message.calls  # type: ignore[no-any-return]


def _client_cancel(call: pb.ClientCall) -> int | None:
    return call.id if call.HasField("cancel") else None


def _client_results(results: list[pb.ClientResult]) -> pb.ClientResults:
    return pb.ClientResults(results=results)


def _client_failed(call_id: int, error: pb.CallError) -> pb.ClientResult:
    return pb.ClientResult(id=call_id, error=error)


def _reply_client(
    session: StreamSession[Any, pb.ClientResult],
    call_id: int,
    kind: str,
    task: asyncio.Future[Any],
) -> None:
    error = task.exception() if not task.cancelled() else asyncio.CancelledError()
    if error is None:
        session.reply(pb.ClientResult(id=call_id, **{kind: task.result()}))
    else:
        session.reply(pb.ClientResult(id=call_id, error=_failure(error)))


def _reply_merged(
    session: StreamSession[Any, pb.PeerResult], call_id: int, durable: asyncio.Future[None]
) -> None:
    error = durable.exception() if not durable.cancelled() else asyncio.CancelledError()
    if error is None:
        session.reply(pb.PeerResult(id=call_id, merge=pb.ReplicaMergeResponse()))
    else:
        session.reply(pb.PeerResult(id=call_id, error=_failure(error)))


def _reply_forwarded(
    session: StreamSession[Any, pb.PeerResult], call_id: int, task: asyncio.Future[PutAnswer]
) -> None:
    error = task.exception() if not task.cancelled() else asyncio.CancelledError()
    if error is None:
        session.reply(pb.PeerResult(id=call_id, forward=translate.put_response(task.result())))
    else:
        session.reply(pb.PeerResult(id=call_id, error=_failure(error)))


class _MergeMany:
    """The items of one merge_many call: each merged (and made durable) on its own; the
    answer, an error or none per item, once every item has ended."""

    __slots__ = ("_answer", "_errors", "_left")

    def __init__(self, count: int, answer: Callable[[list[pb.CallError]], None]) -> None:
        self._errors = [_NO_ERROR] * count
        self._left = count
        self._answer = answer

    def failed(self, index: int, exc: BaseException) -> None:
        self._errors[index] = _failure(exc)
        self._ended()

    def durable(self, index: int, done: asyncio.Future[None]) -> None:
        if done.cancelled():
            self._errors[index] = _failure(asyncio.CancelledError())
        elif (exc := done.exception()) is not None:
            self._errors[index] = _failure(exc)
        self._ended()

    def _ended(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._answer(self._errors)


_NO_ERROR = pb.CallError()
# An item of a read_many not read because the answer was full: the caller reads it alone.
_TOO_LARGE_TO_SHARE = pb.CallError(
    code="ABORTED", message="not read: the shared answer was full; read it alone"
)


def _check_items(count: int) -> None:
    if count > MAX_ITEMS_PER_CALL:
        raise InvalidArgument(f"a call of {count} items; at most {MAX_ITEMS_PER_CALL} are taken")


def _reply_merged_many(
    session: StreamSession[Any, pb.PeerResult], call_id: int, errors: list[pb.CallError]
) -> None:
    session.reply(pb.PeerResult(id=call_id, merge_many=pb.ReplicaMergeManyResponse(errors=errors)))


async def _topology(
    admin: Administering | None, context: grpc.aio.ServicerContext
) -> pb.TopologyResponse:
    async def call() -> pb.TopologyResponse:
        if admin is None:
            raise Unavailable("this node does not serve its topology")
        return translate.topology_response(admin.topology())

    return await _answer(context, call)


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(
        self,
        admin: Administering,
        replica: Replicating,
        drain: Draining | None = None,
        repair: Repairing | None = None,
    ) -> None:
        self._admin = admin
        self._replica = replica
        self._drain = drain
        self._repair = repair

    async def Drain(
        self, request: pb.DrainRequest, context: grpc.aio.ServicerContext
    ) -> pb.DrainResponse:
        drain = self._drain

        async def call() -> pb.DrainResponse:
            if drain is None:
                raise Unavailable("this node cannot drain")
            report = await drain.drain(request.timeout_ms, request.stay)
            # Stopping waits for the answer to be sent: the caller learns what was left.
            context.add_done_callback(lambda _: drain.answered(report))
            return pb.DrainResponse(
                hints_delivered=report.hints_delivered,
                hints_left=report.hints_left,
                exiting=report.exiting,
            )

        return await _answer(context, call)

    async def Repair(
        self, request: pb.RepairRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepairResponse:
        repair = self._repair

        async def call() -> pb.RepairResponse:
            if repair is None:
                raise Unavailable("this node cannot repair")
            report = await repair.repair(list(request.partitions), request.timeout_ms)
            return pb.RepairResponse(
                partitions=report.partitions,
                exchanges=report.exchanges,
                keys_repaired=report.keys_repaired,
                failed=report.failed,
                errors=list(report.errors),
            )

        return await _answer(context, call)

    async def LocalGet(
        self, request: pb.LocalGetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        async def call() -> pb.GetResponse:
            return translate.get_response(self._replica.local_get(request.key))

        return await _answer(context, call)

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        async def call() -> pb.StatusResponse:
            return translate.status_response(self._admin.status())

        return await _answer(context, call)

    async def Join(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinResponse:
        async def call() -> pb.JoinResponse:
            self._admin.join()
            return pb.JoinResponse()

        return await _answer(context, call)

    async def Leave(
        self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaveResponse:
        async def call() -> pb.LeaveResponse:
            self._admin.leave()
            return pb.LeaveResponse()

        return await _answer(context, call)

    async def Remove(
        self, request: pb.RemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveResponse:
        async def call() -> pb.RemoveResponse:
            self._admin.remove(request.address)
            return pb.RemoveResponse()

        return await _answer(context, call)

    async def Locate(
        self, request: pb.LocateRequest, context: grpc.aio.ServicerContext
    ) -> pb.LocateResponse:
        async def call() -> pb.LocateResponse:
            return translate.locate_response(self._admin.locate(request.key))

        return await _answer(context, call)

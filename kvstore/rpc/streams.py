"""Many calls on one long-lived gRPC stream, both ends.

A unary gRPC call costs ~300 µs of CPU in Python; a message on an open stream ~100 µs, and
an item inside a message a few µs. So the request path's calls (a client's gets and puts,
a coordinator's replica reads, merges and forwards) ride one bidi stream per pair of
processes, and the calls that are ready in one turn of the event loop leave in one message.
Nothing waits on a timer to fill a message: while other messages are out (or, for
results, other calls are being worked on) a message waits only while the turns of the event
loop keep adding calls to it (a burst of them; see `GATHER_TURNS`), or while a message is
out that the receiver has not begun to answer (`MAX_OPEN_MESSAGES`, Nagle's rule without
its timer). At low load a call leaves alone, at once.

The messages of both streams (kvstore.v1.KV/Stream and kvstore.v1.Peer/Stream) share a
shape this module relies on: a message of calls is `repeated <Call> calls = 1`, each call
has `uint64 id = 1` and `Cancel cancel = 6`; a message of results is
`repeated <Result> results = 1`, each result has `uint64 id = 1`. A caller hands this
module a call's serialized fields without its id (`body`); the id is added here.

`CallStream` is the calling end: per-call deadlines (a timer each), cancellation (a call
abandoned after it left is cancelled at the receiver), backpressure (a bound on the bytes of
the calls in flight; a call past it waits, within its deadline, for room), and reconnection
(a broken stream is replaced by a new one on the next call). What a failed call may be
retried as is exact: `NeverSent` (no stream carried it; it may go elsewhere) differs from
`OutcomeUnknown` (it left, and the stream broke or its deadline passed before its result).

`StreamSession` is the receiving end: it reads messages of calls, hands each call to a
handler, and writes the results, those ready together in one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence, Sized
from typing import Any, Generic, Protocol, TypeVar

import grpc

log = logging.getLogger(__name__)

# Field 1, wire type 2 (length-delimited): one call inside a message of calls.
_CALL_TAG = b"\x0a"
# Field 1, wire type 0 (varint): a call's id.
_ID_TAG = b"\x08"
# Field 6 (Cancel, an empty message): the body of a cancel call.
CANCEL_BODY = b"\x32\x00"
# How many turns of the event loop a message waits at most for the calls (or results) of a
# burst to join it; it leaves at once when a turn adds nothing. Measured on this 2-core
# machine (3 nodes, 64 tasks): 0 turns sent ~1.2 calls per message and cost ~2.4 ms of CPU per
# operation in all processes; 8 turns ~2.2 calls per message and ~1.0 ms.
GATHER_TURNS = 8
# Messages that may be out on a stream before the receiver has answered any call of them: a
# message is open from its write until the first of its calls ends (answered, failed or
# given up). Past the bound, calls wait and leave together once a message is answered
# (Nagle's algorithm, with the first answer as the acknowledgement and no timer): at low load
# nothing is open and a call leaves at once; under load the calls that arrive during a round
# trip share one message. Measured here (3 nodes, 64 tasks, 50/50 get/put, CPU per operation
# in all processes): no bound ~1.2 ms (~2 calls per message); 3: ~0.87 ms; 2: ~0.73 ms;
# 1: ~0.65 ms, with the same latency at half load.
MAX_OPEN_MESSAGES = 1
# How long `close` waits for a cancelled stream call to end in gRPC.
_CLOSE_WAIT_S = 1.0
# What a call adds to a message besides its body: its id, tag and length (at most 10 + 1
# and 10 + 1 bytes), and the accounting of its future.
_CALL_OVERHEAD = 64


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited protobuf field: tag, length, bytes."""
    return tag + varint(len(data)) + data


class StreamFailure(Exception):
    """A call on a stream did not get its result."""


class NeverSent(StreamFailure):
    """The call never left this process: no stream to the peer was open in time (it is down,
    or refused), or the call waited for room past its deadline. It may be sent elsewhere."""


class OutcomeUnknown(StreamFailure):
    """The call left and no result came: the stream broke, or the deadline passed. The
    receiver may have acted on it; a write must not be sent again elsewhere."""

    def __init__(self, message: str, deadline: bool = False) -> None:
        super().__init__(message)
        self.deadline = deadline


class CallTooLarge(StreamFailure):
    """The call is larger than a message of the stream may be."""


class _Result(Protocol):
    id: int


R = TypeVar("R", bound=_Result)


class _Message:
    """A message sent: open (counted against MAX_OPEN_MESSAGES) until the first of its
    calls ends."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class _Call:
    __slots__ = ("data", "fail_fast", "future", "id", "message", "sent", "size", "timer")

    def __init__(
        self, call_id: int, data: bytes, size: int, future: asyncio.Future[Any], fail_fast: bool
    ) -> None:
        self.id = call_id
        self.data = data
        self.future = future
        self.fail_fast = fail_fast
        self.sent = False
        self.size = size
        self.timer: asyncio.TimerHandle | None = None
        self.message: _Message | None = None


class CallStream(Generic[R]):
    """The calling end of one long-lived stream to one server.

    `open_stream` starts a new stream call (a grpc.aio StreamStreamCall whose requests are
    bytes and whose responses are messages of results); `results_of` gives a response's
    results. `wait_for_ready`: a stream being opened waits for the connection (calls wait
    within their deadlines) instead of failing at once when it is down; calls made with
    `fail_fast` then still fail at once, NeverSent, while the channel reports a failure.
    """

    def __init__(
        self,
        name: str,
        channel: grpc.aio.Channel,
        open_stream: Callable[[], grpc.aio.StreamStreamCall],
        results_of: Callable[[Any], Sequence[R]],
        *,
        max_inflight_bytes: int,
        max_message_bytes: int,
        wait_for_ready: bool,
        counters: Counter[str] | None = None,
        counter_prefix: str = "",
        max_open_messages: int = MAX_OPEN_MESSAGES,
    ) -> None:
        self.name = name
        self._channel = channel
        self._open_stream = open_stream
        self._results_of = results_of
        self._max_inflight_bytes = max_inflight_bytes
        self._max_message_bytes = max_message_bytes
        self._wait_for_ready = wait_for_ready
        self._ids = itertools.count(1)
        self._queue: deque[_Call] = deque()
        self._calls: dict[int, _Call] = {}  # queued or sent, not finished
        self._cancels: list[int] = []  # ids to cancel at the receiver, with the next message
        self._inflight_bytes = 0
        self._waiting_room: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._stream: grpc.aio.StreamStreamCall | None = None  # established
        self._pump_task: asyncio.Task[None] | None = None
        self._readers: set[asyncio.Task[None]] = set()
        self._closed = False
        self._open_messages = 0
        self._max_open_messages = max_open_messages
        self._opened: set[grpc.aio.StreamStreamCall] = set()  # calls not ended (close waits)
        # Counters for tests: messages and calls sent, streams opened; and, when given, the
        # same (summed over streams) in `counters` as <prefix>messages_sent, ... (operators).
        self.messages_sent = 0
        self.calls_sent = 0
        self.streams_opened = 0
        self._counters = counters
        self._counter_prefix = counter_prefix

    @property
    def inflight_bytes(self) -> int:
        """Bytes of the calls queued or sent and not finished (the backpressure bound)."""
        return self._inflight_bytes

    @property
    def established(self) -> bool:
        return self._stream is not None

    async def call(self, body: bytes, timeout: float, fail_fast: bool = False) -> R:
        """Send a call (its serialized fields without the id) and wait for its result.

        Raises NeverSent, OutcomeUnknown (also when `timeout` passes after it left) or
        CallTooLarge. A caller that is cancelled abandons the call: one still queued is
        dropped, one that left is cancelled at the receiver."""
        return await self.submit(body, timeout, fail_fast)

    def submit(self, body: bytes, timeout: float, fail_fast: bool = False) -> asyncio.Future[R]:
        """`call` as a future (no task when there is room, the usual case): done with the
        result or the failure; cancelling it abandons the call."""
        loop = asyncio.get_running_loop()
        size = len(body) + _CALL_OVERHEAD
        refused: StreamFailure | None = None
        if self._closed:
            refused = NeverSent(f"{self.name}: the stream is closed")
        elif size > self._max_message_bytes:
            refused = CallTooLarge(
                f"{self.name}: a call of {len(body)} bytes exceeds the message limit of"
                f" {self._max_message_bytes} bytes"
            )
        elif fail_fast and self._stream is None and self._channel_failing():
            refused = NeverSent(f"{self.name}: no connection (the channel is failing)")
        if refused is not None:
            failed: asyncio.Future[R] = loop.create_future()
            failed.set_exception(refused)
            return failed
        deadline = loop.time() + timeout
        if self._waiting_room or (
            self._inflight_bytes and self._inflight_bytes + size > self._max_inflight_bytes
        ):
            return loop.create_task(self._enqueue_when_let_in(body, size, deadline, fail_fast))
        self._inflight_bytes += size
        return self._enqueue(body, size, deadline, fail_fast)

    async def _enqueue_when_let_in(
        self, body: bytes, size: int, deadline: float, fail_fast: bool
    ) -> R:
        await self._room(size, deadline)  # counts `size` in when it lets the call in
        return await self._enqueue(body, size, deadline, fail_fast)

    def _enqueue(
        self, body: bytes, size: int, deadline: float, fail_fast: bool
    ) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        future: asyncio.Future[R] = loop.create_future()
        call = _Call(call_id, _ID_TAG + varint(call_id) + body, size, future, fail_fast)
        call.timer = loop.call_at(deadline, self._expire, call)
        future.add_done_callback(lambda done: self._abandon(call) if done.cancelled() else None)
        self._calls[call_id] = call
        self._queue.append(call)
        self._kick()
        return future

    # ---- the pump: queued calls -> messages on the stream ----

    def _kick(self) -> None:
        self._wake.set()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while not self._closed:
            if not self._queue and not self._cancels:
                self._wake.clear()
                await self._wake.wait()
                continue
            stream = self._stream
            if stream is None:
                if not self._queue:
                    self._cancels.clear()  # the stream they were for is gone
                    continue
                await self._open()
                continue
            if self._open_messages >= self._max_open_messages:
                # Nagle's rule, without its timer: while messages are out that the receiver
                # has not begun to answer, new calls wait and leave together.
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._open_messages:  # busy: let the calls of this burst join
                await _gather(self._queue)
            message, calls = self._take_message()
            if not message:
                continue
            sent = _Message()
            if calls:
                self._open_messages += 1
                for call in calls:
                    call.message = sent
            try:
                await stream.write(message)
                self.messages_sent += 1
                if self._counters is not None:
                    self._counters[self._counter_prefix + "messages_sent"] += 1
                    self._counters[self._counter_prefix + "calls_sent"] += len(calls)
            except asyncio.CancelledError:
                raise
            except asyncio.InvalidStateError:
                # The call had ended before this write: the message never left, so its
                # calls go (first, in order) on the next stream.
                if calls and sent.open:
                    sent.open = False
                    self._open_messages -= 1
                for call in reversed(calls):
                    call.sent = False
                    call.message = None
                    self._queue.appendleft(call)
                self._broken(stream, "the stream had ended")
            except Exception as exc:  # mid-write: the calls may have left
                self._broken(stream, f"write failed: {exc}")

    def _take_message(self) -> tuple[bytes, list[_Call]]:
        """The queued calls (and cancels) that fit in one message, marked sent."""
        taken: list[_Call] = []
        parts: list[bytes] = []
        total = 0
        for call_id in self._cancels:
            part = field(_CALL_TAG, _ID_TAG + varint(call_id) + CANCEL_BODY)
            parts.append(part)
            total += len(part)
        self._cancels.clear()
        queue = self._queue
        while queue:
            call = queue[0]
            if call.future.done():  # expired or abandoned while queued
                queue.popleft()
                continue
            if parts and total + call.size > self._max_message_bytes:
                break
            queue.popleft()
            part = field(_CALL_TAG, call.data)
            parts.append(part)
            total += len(part)
            call.sent = True
            taken.append(call)
            self.calls_sent += 1
        return b"".join(parts), taken

    async def _open(self) -> None:
        """Open a stream; until it is established no call leaves. A stream that cannot be
        opened fails the calls queued for it, NeverSent."""
        stream: grpc.aio.StreamStreamCall | None = None
        try:
            stream = self._open_stream()
            self._opened.add(stream)
            stream.add_done_callback(self._opened.discard)
            reader = asyncio.get_running_loop().create_task(self._read(stream))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
            if self._wait_for_ready:
                await self._await_established(stream)
            else:
                await stream.initial_metadata()
            if stream.done():
                detail = await _describe_end(stream)
                self._fail_queued(NeverSent(f"{self.name}: cannot open a stream: {detail}"))
                return
        except asyncio.CancelledError:
            if stream is not None:
                stream.cancel()
            raise
        except Exception as exc:  # grpc refused to start the call at all
            if stream is not None:
                stream.cancel()
            self._fail_queued(NeverSent(f"{self.name}: cannot open a stream: {exc}"))
            return
        self._stream = stream
        self.streams_opened += 1
        if self._counters is not None:
            self._counters[self._counter_prefix + "streams_opened"] += 1

    async def _await_established(self, stream: grpc.aio.StreamStreamCall) -> None:
        """Wait for the receiver's first word (its initial metadata). Meanwhile, whenever
        the channel reports a failure, calls that must not wait for a connection fail."""
        established = asyncio.ensure_future(stream.initial_metadata())
        try:
            while not established.done():
                state = self._channel.get_state(try_to_connect=True)
                if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    self._fail_queued(
                        NeverSent(f"{self.name}: no connection (the channel is failing)"),
                        only_fail_fast=True,
                    )
                changed = asyncio.ensure_future(self._channel.wait_for_state_change(state))
                try:
                    await asyncio.wait((established, changed), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
        finally:
            if not established.done():
                established.cancel()

    def _channel_failing(self) -> bool:
        state = self._channel.get_state(try_to_connect=True)
        return state is grpc.ChannelConnectivity.TRANSIENT_FAILURE

    # ---- the reader: results -> the calls' futures ----

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:
        reason = "the stream ended"
        try:
            while True:
                message = await stream.read()
                if message is grpc.aio.EOF:
                    break
                for result in self._results_of(message):
                    call = self._calls.get(result.id)
                    if call is not None and call.sent:
                        self._finish(call)
                        if not call.future.done():
                            call.future.set_result(result)
        except asyncio.CancelledError:
            reason = "the stream was closed"
            raise
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details() or ''}"
        except Exception as exc:  # a result this end cannot read: the stream is unusable
            log.warning("%s: bad message on a stream: %s", self.name, exc)
            reason = f"unreadable message: {exc}"
            stream.cancel()
        finally:
            self._broken(stream, reason)

    def _broken(self, stream: grpc.aio.StreamStreamCall, reason: str) -> None:
        """The stream ended: the calls that left on it will get no result."""
        if self._stream is None or self._stream is not stream:
            return
        self._stream = None
        stream.cancel()
        for call in list(self._calls.values()):
            if call.sent:
                self._finish(call)
                if not call.future.done():
                    call.future.set_exception(
                        OutcomeUnknown(f"{self.name}: the stream broke ({reason})")
                    )
        if self._queue:
            self._kick()  # the calls still queued go on a new stream

    # ---- bookkeeping ----

    def _finish(self, call: _Call) -> None:
        """The call is over (result, failure, expiry, abandonment): release what it held."""
        if self._calls.pop(call.id, None) is None:
            return
        if call.message is not None and call.message.open:
            call.message.open = False
            self._open_messages -= 1
            self._wake.set()
        if call.timer is not None:
            call.timer.cancel()
        self._inflight_bytes -= call.size
        self._let_in()

    def _expire(self, call: _Call) -> None:
        if call.future.done():
            return
        self._finish(call)
        if call.sent:
            call.future.set_exception(
                OutcomeUnknown(f"{self.name}: no answer in time", deadline=True)
            )
        else:
            call.future.set_exception(NeverSent(f"{self.name}: not sent in time (no stream)"))

    def _abandon(self, call: _Call) -> None:
        if call.id not in self._calls:
            return
        self._finish(call)
        if call.sent and self._stream is not None:
            self._cancels.append(call.id)
            self._kick()

    def _fail_queued(self, error: StreamFailure, only_fail_fast: bool = False) -> None:
        kept: deque[_Call] = deque()
        for call in self._queue:
            if call.future.done():
                continue
            if only_fail_fast and not call.fail_fast:
                kept.append(call)
                continue
            self._finish(call)
            call.future.set_exception(error)
        self._queue = kept

    async def _room(self, size: int, deadline: float) -> None:
        """Wait until the calls in flight leave room for `size` bytes (first come, first
        served), or raise NeverSent at the deadline."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (size, waiter)
        self._waiting_room.append(entry)
        timer = loop.call_at(deadline, lambda: waiter.done() or waiter.cancel())
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._inflight_bytes -= size  # let in, but its caller went away
                self._let_in()
            if waiter.cancelled() and loop.time() >= deadline:
                raise NeverSent(
                    f"{self.name}: no room in time ({self._inflight_bytes} bytes in flight;"
                    f" the bound is {self._max_inflight_bytes})"
                ) from None
            raise
        finally:
            timer.cancel()
            if entry in self._waiting_room:
                self._waiting_room.remove(entry)
                self._let_in()

    def _let_in(self) -> None:
        """Let the callers waiting for room in, in order, as far as the room goes (the first
        always, when nothing is in flight); each is counted in as it is let in."""
        while self._waiting_room:
            size, waiter = self._waiting_room[0]
            if waiter.done():
                self._waiting_room.popleft()
                continue
            if self._inflight_bytes and self._inflight_bytes + size > self._max_inflight_bytes:
                return
            self._waiting_room.popleft()
            self._inflight_bytes += size
            waiter.set_result(None)

    async def close(self) -> None:
        """Fail every call (NeverSent if queued, OutcomeUnknown if sent) and end the stream."""
        self._closed = True
        self._fail_queued(NeverSent(f"{self.name}: the stream is closed"))
        for call in list(self._calls.values()):
            self._finish(call)
            if not call.future.done():
                call.future.set_exception(OutcomeUnknown(f"{self.name}: the stream is closed"))
        self._stream = None
        tasks = [t for t in (self._pump_task, *self._readers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Wait for the calls to end in gRPC too: a loop closed while gRPC still finishes
        # them leaves its poller thread calling into a closed loop.
        calls, self._opened = self._opened, set()
        for stream in calls:
            stream.cancel()
        for stream in calls:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(stream.code(), _CLOSE_WAIT_S)


async def _gather(queue: Sized) -> None:
    """Let the calls (or results) being made in this burst join the message: yield turns of
    the event loop while each turn adds to `queue`, a few at most. A lone call waits one
    turn, not a timer."""
    size = len(queue)
    for _ in range(GATHER_TURNS):
        await asyncio.sleep(0)
        if len(queue) == size:
            return
        size = len(queue)


async def _describe_end(stream: grpc.aio.StreamStreamCall) -> str:
    code = await stream.code()
    details = await stream.details()
    return f"{code.name}: {details}" if details else code.name


# ---- the receiving end ----

C = TypeVar("C")  # a call message
T = TypeVar("T")  # a result message


class StreamSession(Generic[C, T]):
    """The receiving end of one stream: calls in, results out.

    `handle(call, session)` is given each call but cancels, in the order they arrived; it
    answers each exactly once with `session.reply(result)`, at once or later (a future's
    callback, a task it registers with `track` so a cancel can stop it). A cancel
    (`cancelled_id(call)` names the call it cancels, else None) cancels that task. Results
    ready together leave in one message.
    Reading pauses while `max_pending` calls are unanswered, so a caller that sends faster
    than this end works is held back by the transport's flow control, not by memory here.
    """

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        make_message: Callable[[list[T]], Any],
        max_pending: int,
        counters: Counter[str] | None = None,
        counter_prefix: str = "",
    ) -> None:
        self._context = context
        self._counters: Counter[str] = Counter() if counters is None else counters
        self._prefix = counter_prefix
        self._make_message = make_message
        self._max_pending = max_pending
        self._outbox: list[T] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._pending = 0
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._closed = False

    def reply(self, result: T) -> None:
        """Send a call's result (with the others ready now). Each opened call replies once."""
        if self._closed:
            return
        self._pending -= 1
        if self._pending < self._max_pending and not self._room.is_set():
            self._room.set()
        self._outbox.append(result)
        self._ready.set()

    def track(self, call_id: int, task: asyncio.Task[Any]) -> None:
        """A call being worked on by `task`: a Cancel for `call_id` cancels it."""
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(call_id, None))

    def cancel(self, call_id: int) -> None:
        task = self._tasks.pop(call_id, None)
        if task is not None:
            task.cancel()

    async def serve(
        self,
        calls: AsyncIterator[Any],
        calls_of: Callable[[Any], Iterable[C]],
        cancelled_id: Callable[[C], int | None],
        handle: Callable[[C, StreamSession[C, T]], None],
    ) -> None:
        """Run until the caller ends the stream (or it breaks); then stop the work left."""
        # The caller sends nothing before this: until then no call has left (NeverSent).
        await self._context.send_initial_metadata(())
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            counters, prefix = self._counters, self._prefix
            async for message in calls:
                counters[prefix + "messages_received"] += 1
                for call in calls_of(message):
                    cancelled = cancelled_id(call)
                    if cancelled is not None:
                        self.cancel(cancelled)
                        continue
                    self._pending += 1
                    counters[prefix + "calls_received"] += 1
                    handle(call, self)
                if self._pending >= self._max_pending:
                    self._room.clear()
                    await self._room.wait()
        finally:
            self._closed = True
            for task in list(self._tasks.values()):
                task.cancel()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._pending:  # calls still being worked on: their results may join
                await _gather(self._outbox)
            while self._outbox:
                results, self._outbox = self._outbox, []
                await self._context.write(self._make_message(results))
                self._counters[self._prefix + "messages_replied"] += 1

"""Many calls on one long-lived gRPC stream: the calling end (the receiving end is
kvstore.rpc.session).

A unary gRPC call costs ~300 µs of CPU in Python; a message on an open stream ~100 µs, and
an item inside a message a few µs. So the request path's calls (a client's gets and puts,
a coordinator's replica reads, merges and forwards) ride one bidi stream per pair of
processes, and the calls that are ready in one turn of the event loop leave in one message.
Nothing waits on a timer to fill a message: while a message is out that the receiver has
not begun to answer (`MAX_OPEN_MESSAGES`, Nagle's rule with the first answer as the
acknowledgement), new calls wait and then leave together, and while other messages are out a
message waits for the turns of the loop that keep adding calls to it (`GATHER_TURNS`). At low
load a call leaves alone, at once.

The messages of both streams (kvstore.v1.KV/Stream and kvstore.v1.Peer/Stream) share a
shape this module relies on: a message of calls is `repeated <Call> calls = 1`, each call
has `uint64 id = 1` and `Cancel cancel = 6`; a message of results is
`repeated <Result> results = 1`, each result has `uint64 id = 1`. A caller hands this
module a call's serialized fields without its id (`body`); the id is added here.

`CallStream` gives each call its own deadline (a timer), cancels at the receiver a call whose
caller gave up after it left, bounds the bytes of the calls queued or unanswered (a call past
the bound waits, within its deadline, for room; a queued call holds its bytes until it leaves
the queue, so a stream stuck on a peer that stopped reading holds at most the bound), keeps
messages under the receiver's limit (announced in its initial metadata), and replaces a
broken stream on the next call. What a failed call may be retried as is exact: `NeverSent`
(no stream carried it; it may go elsewhere) differs from `OutcomeUnknown` (it left, and the
stream broke or its deadline passed before its result).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence, Sized
from typing import Any, Generic, Protocol, TypeVar

import grpc

log = logging.getLogger(__name__)

# Field 1, wire type 2 (length-delimited): one call inside a message of calls.
_CALL_TAG = b"\x0a"
# Field 1, wire type 0 (varint): a call's id.
_ID_TAG = b"\x08"
# Field 6 (Cancel, an empty message): the body of a cancel call.
CANCEL_BODY = b"\x32\x00"
# The initial-metadata key under which a receiver announces the largest message it takes.
LIMIT_KEY = "kvstore-max-message-bytes"
# How many turns of the event loop a message waits at most for the calls (or results) of a
# burst to join it; it leaves at once when a turn adds nothing, and does not wait at all
# when nothing else is out.
GATHER_TURNS = 8
# Messages that may be out on a stream before the receiver has answered any call of them: a
# message is open from its write until the first of its calls ends (answered, failed or
# given up), or for at most twice the time a first answer has lately taken on this stream
# (OPEN_MESSAGE_MIN_S..OPEN_MESSAGE_MAX_S). Past the bound, calls wait and leave together
# (Nagle's algorithm, the first answer as the acknowledgement): under load the calls that
# arrive during a round trip share one message. The time bound keeps one unusually slow
# call (a forwarded put, an fsync, a large batch) from holding up the calls behind it for
# longer than a usual round trip or two; it never adds latency at low load, where nothing is
# open. Measured here (3 nodes, 64 tasks, 50/50 get/put, CPU per operation in all processes):
# no bound ~1.2 ms (~2 calls per message); 3: ~0.87 ms; 2: ~0.73 ms; 1: ~0.65 ms, with the
# same latency at half load. A fixed time bound of 2 ms cost ~1.0 ms, 5 ms ~0.87, 50 ms ~0.68.
MAX_OPEN_MESSAGES = 1
OPEN_MESSAGE_MIN_S = 0.001
OPEN_MESSAGE_MAX_S = 0.05
# How fast the estimate of a first answer's delay follows new ones (an exponential average).
_ANSWER_DELAY_WEIGHT = 0.1
# A message gathers calls up to this many bytes and calls (one larger call goes alone):
# large enough to amortise, small enough that one message never holds up a stream for long.
MESSAGE_TARGET_BYTES = 2 * 1024 * 1024
MAX_CALLS_PER_MESSAGE = 1024
# What a call adds to a message besides its body: its id, tag and length (at most 10 + 1
# and 10 + 1 bytes), and the accounting of its future.
_CALL_OVERHEAD = 64
# How long `close` waits for a cancelled stream call to end in gRPC.
_CLOSE_WAIT_S = 1.0


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
    or refused), or the call waited for room past its deadline. It may be sent elsewhere.
    `code`: the status the receiver refused the stream with, when it did (UNAUTHENTICATED:
    the credentials, which no other node of the cluster takes either)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class OutcomeUnknown(StreamFailure):
    """The call left and no result came: the stream broke, or the deadline passed. The
    receiver may have acted on it; a write must not be sent again elsewhere."""

    def __init__(self, message: str, deadline: bool = False) -> None:
        super().__init__(message)
        self.deadline = deadline


class CallTooLarge(StreamFailure):
    """The call is larger than a message of the stream may be (it never left)."""


class _Result(Protocol):
    id: int


R = TypeVar("R", bound=_Result)


class _Message:
    """A message sent: open (counted against MAX_OPEN_MESSAGES) until the first of its
    calls ends, or its time is up."""

    __slots__ = ("open", "sent_at", "timer")

    def __init__(self, sent_at: float) -> None:
        self.open = True
        self.sent_at = sent_at
        self.timer: asyncio.TimerHandle | None = None


class _Call:
    __slots__ = (
        "data",
        "fail_fast",
        "future",
        "id",
        "message",
        "queued",
        "released",
        "sent",
        "size",
        "timer",
    )

    def __init__(
        self, call_id: int, data: bytes, size: int, future: asyncio.Future[Any], fail_fast: bool
    ) -> None:
        self.id = call_id
        self.data = data
        self.future = future
        self.fail_fast = fail_fast
        self.sent = False
        self.queued = True
        self.released = False  # its bytes given back to the bound
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
    `max_message_bytes`: the largest message this end sends (the receiver's announced limit,
    when lower, takes its place).
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
        hold_s: float | None = None,
    ) -> None:
        self.name = name
        self._hold_s = hold_s  # how long a message stays open at most; None: adaptive
        self._answer_delay = OPEN_MESSAGE_MIN_S  # a first answer's delay, lately
        self._channel = channel
        self._open_stream = open_stream
        self._results_of = results_of
        self._max_inflight_bytes = max_inflight_bytes
        self._limit = max_message_bytes
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
        # Loop time of the last message the receiver sent back: whether it still answers.
        self.last_answer_at = 0.0
        self._counters = counters
        self._counter_prefix = counter_prefix

    @property
    def inflight_bytes(self) -> int:
        """Bytes of the calls queued or sent and not finished (the backpressure bound)."""
        return self._inflight_bytes

    @property
    def open_messages(self) -> int:
        return self._open_messages

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
        refused = self._refusal(size, fail_fast)
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

    def _refusal(self, size: int, fail_fast: bool) -> StreamFailure | None:
        if self._closed:
            return NeverSent(f"{self.name}: the stream is closed")
        if size > self._limit:
            return CallTooLarge(
                f"{self.name}: a call of {size - _CALL_OVERHEAD} bytes exceeds the message"
                f" limit of {self._limit} bytes"
            )
        if fail_fast and self._stream is None and self._channel_failing():
            return NeverSent(f"{self.name}: no connection (the channel is failing)")
        return None

    async def _enqueue_when_let_in(
        self, body: bytes, size: int, deadline: float, fail_fast: bool
    ) -> R:
        await self._room(size, deadline)  # counts `size` in when it lets the call in
        return await self._enqueue(body, size, deadline, fail_fast)

    def _enqueue(
        self, body: bytes, size: int, deadline: float, fail_fast: bool
    ) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._closed:  # closed while it waited for room
            self._inflight_bytes -= size
            future.set_exception(NeverSent(f"{self.name}: the stream is closed"))
            return future
        call_id = next(self._ids)
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
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._open_messages:  # busy: let the calls of this burst join
                await gather_burst(self._queue)
            message, calls = self._take_message()
            if message:
                await self._send(stream, message, calls)

    async def _send(
        self, stream: grpc.aio.StreamStreamCall, message: bytes, calls: list[_Call]
    ) -> None:
        loop = asyncio.get_running_loop()
        sent = _Message(loop.time())
        if calls:
            self._open_messages += 1
            for call in calls:
                call.message = sent
            hold = self._hold_s
            if hold is None:
                hold = min(max(2 * self._answer_delay, OPEN_MESSAGE_MIN_S), OPEN_MESSAGE_MAX_S)
            sent.timer = loop.call_later(hold, self._close_message, sent)
        try:
            await stream.write(message)
            self.messages_sent += 1
            if self._counters is not None:
                self._counters[self._counter_prefix + "messages_sent"] += 1
                self._counters[self._counter_prefix + "calls_sent"] += len(calls)
        except asyncio.InvalidStateError:
            # The call had ended before this write (grpc checks that first): the message
            # never left, so its calls go (first, in order) on the next stream.
            self._close_message(sent)
            for call in reversed(calls):
                if call.sent and not call.future.done():
                    call.sent = False
                    call.queued = True
                    call.message = None
                    self._queue.appendleft(call)
            self._broken(stream, "the stream had ended")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the pump itself is stopped (close)
            self._broken(stream, "the write was cancelled")  # the call was, under it
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
        target = min(MESSAGE_TARGET_BYTES, self._limit)
        while queue and len(taken) < MAX_CALLS_PER_MESSAGE:
            call = queue[0]
            if call.future.done():  # expired or abandoned while queued: gone for good
                queue.popleft()
                call.queued = False
                self._release(call)
                continue
            if call.size > self._limit:  # the receiver announced a lower limit than ours
                queue.popleft()
                call.queued = False
                self._finish(call)
                call.future.set_exception(
                    CallTooLarge(
                        f"{self.name}: a call of {call.size - _CALL_OVERHEAD} bytes exceeds"
                        f" the receiver's message limit of {self._limit} bytes"
                    )
                )
                continue
            if parts and total + call.size > target:
                break
            queue.popleft()
            call.queued = False
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
            metadata = await stream.initial_metadata()
            if stream.done():
                code = (await stream.code()).name
                detail = await _describe_end(stream)
                self._fail_queued(NeverSent(f"{self.name}: cannot open a stream: {detail}", code))
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
        self._limit = _announced_limit(metadata, self._limit)
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
            elif not established.cancelled():
                established.exception()  # taken: the caller reads the metadata again

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
                self.last_answer_at = asyncio.get_running_loop().time()
                for result in self._results_of(message):
                    call = self._calls.get(result.id)
                    if call is not None and call.sent:
                        if call.message is not None and call.message.open:
                            self._learn_answer_delay(call.message)
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
        """The call is over (result, failure, expiry, abandonment). A call that left gives
        its bytes back now; one still queued holds them until it leaves the queue, so the
        bound holds while the pump cannot send (its data, no longer needed, is dropped)."""
        if self._calls.pop(call.id, None) is None:
            return
        if call.timer is not None:
            call.timer.cancel()
        if call.message is not None:
            self._close_message(call.message)
        if call.queued:
            call.data = b""
        else:
            self._release(call)

    def _release(self, call: _Call) -> None:
        if not call.released:
            call.released = True
            self._inflight_bytes -= call.size
            self._let_in()

    def _learn_answer_delay(self, message: _Message) -> None:
        delay = asyncio.get_running_loop().time() - message.sent_at
        self._answer_delay += _ANSWER_DELAY_WEIGHT * (delay - self._answer_delay)

    def _close_message(self, message: _Message) -> None:
        if message.open:
            message.open = False
            if message.timer is not None:
                message.timer.cancel()
            self._open_messages -= 1
            self._wake.set()

    def _expire(self, call: _Call) -> None:
        if call.future.done():
            return
        self._finish(call)
        if call.sent:
            call.future.set_exception(
                OutcomeUnknown(f"{self.name}: no answer by the deadline", deadline=True)
            )
            if self._stream is not None:  # the receiver need not go on with it
                self._cancels.append(call.id)
                self._kick()
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
            if not call.future.done() and only_fail_fast and not call.fail_fast:
                kept.append(call)
                continue
            call.queued = False
            self._finish(call)
            self._release(call)
            if not call.future.done():
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
        """Fail every call (NeverSent if queued or waiting for room, OutcomeUnknown if sent)
        and end the stream."""
        self._closed = True
        for _, waiter in self._waiting_room:
            if not waiter.done():
                waiter.set_exception(NeverSent(f"{self.name}: the stream is closed"))
        self._waiting_room.clear()
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


class _Results(Protocol):
    results: Sequence[Any]

    @classmethod
    def FromString(cls, data: bytes) -> Any: ...


def stream_to(
    name: str,
    channel: grpc.aio.Channel,
    method: str,
    results: type[_Results],
    *,
    wait_for_ready: bool,
    max_inflight_bytes: int,
    max_message_bytes: int,
    counters: Counter[str] | None = None,
    counter_prefix: str = "",
) -> CallStream[Any]:
    """A CallStream over `channel` to the stream method `method` (whose messages of results
    are `results`): what the peer transport and the clients each keep per address."""
    open_call = channel.stream_stream(
        method,
        request_serializer=None,  # messages of calls are built as bytes here
        response_deserializer=results.FromString,
        _registered_method=True,
    )
    return CallStream(
        name,
        channel,
        lambda: open_call(wait_for_ready=wait_for_ready),
        _results_of,
        max_inflight_bytes=max_inflight_bytes,
        max_message_bytes=max_message_bytes,
        wait_for_ready=wait_for_ready,
        counters=counters,
        counter_prefix=counter_prefix,
    )


def _results_of(message: Any) -> Sequence[Any]:
    return message.results  # type: ignore[no-any-return]


def _announced_limit(metadata: Any, ours: int) -> int:
    """The receiver's message limit from its initial metadata, if lower than ours."""
    for key, value in metadata or ():
        if key == LIMIT_KEY:
            with contextlib.suppress(TypeError, ValueError):
                announced = int(value)
                if announced > 1024:  # a receiver that cannot take 1 KiB is lying
                    return min(ours, announced)
    return ours


async def gather_burst(queue: Sized) -> None:
    """Let the calls (or results) being made in this burst join the message: yield turns of
    the event loop while each turn adds to `queue`, GATHER_TURNS at most."""
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

"""The receiving end of a stream of calls (kvstore.rpc.streams is the calling end): it reads
messages of calls, hands each call to a handler, and writes the results, those ready together
in one message.

What a caller may send is bounded here, since a caller is not trusted to be the project's
own CallStream: a message holds at most MAX_CALLS_PER_MESSAGE calls (more ends the stream);
at most `max_pending` calls of a stream are worked on at once (one past it is answered
RESOURCE_EXHAUSTED at once; cancels still get through); reading pauses while `max_pending`
results wait to be written, so a caller that does not read its results is held back by flow
control, not by memory here; and no result message exceeds the limit this end announces in
its initial metadata (a result that cannot fit in one is answered RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.rpc.streams import LIMIT_KEY, MAX_CALLS_PER_MESSAGE, MESSAGE_TARGET_BYTES, gather_burst

# What a result adds to its message besides itself: a tag and a length.
_RESULT_FRAMING = 6


class _Result(Protocol):
    id: int

    def ByteSize(self) -> int: ...


C = TypeVar("C")  # a call message
T = TypeVar("T", bound=_Result)  # a result message


class StreamSession(Generic[C, T]):
    """The receiving end of one stream: calls in, results out.

    `handle(call, session)` is given each call but cancels, in the order they arrived; it
    answers each exactly once with `session.reply(result)`, at once or later (a future's
    callback, a task it registers with `track` so a cancel can stop it). A cancel
    (`cancelled_id(call)` names the call it cancels, else None) cancels that task.
    `failed(call_id, error)` makes the result of a call this end refuses (a CallError).
    """

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        make_message: Callable[[list[T]], Any],
        failed: Callable[[int, pb.CallError], T],
        max_pending: int,
        max_message_bytes: int,
        counters: Counter[str] | None = None,
        counter_prefix: str = "",
        announce_bytes: int = 0,
    ) -> None:
        """`announce_bytes`: the receive limit told to the caller (default: the largest
        message sent, `max_message_bytes`)."""
        self._context = context
        self._announce_bytes = announce_bytes or max_message_bytes
        self._counters: Counter[str] = Counter() if counters is None else counters
        self._prefix = counter_prefix
        self._make_message = make_message
        self._failed = failed
        self._max_pending = max_pending
        self._max_message_bytes = max_message_bytes
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
        self._outbox.append(result)
        self._ready.set()

    def track(self, call_id: int, task: asyncio.Task[Any]) -> None:
        """A call being worked on by `task`: a Cancel for `call_id` cancels it."""
        self._tasks[call_id] = task
        task.add_done_callback(lambda _: self._untrack(call_id, task))

    def _untrack(self, call_id: int, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(call_id) is task:  # a caller may repeat an id: keep the newer
            del self._tasks[call_id]

    def cancel(self, call_id: int) -> None:
        task = self._tasks.pop(call_id, None)
        if task is not None:
            task.cancel()

    async def serve(
        self,
        calls: AsyncIterator[Any],
        calls_of: Callable[[Any], Iterable[C]],
        cancelled_id: Callable[[C], int | None],
        call_id: Callable[[C], int],
        handle: Callable[[C, StreamSession[C, T]], None],
    ) -> None:
        """Run until the caller ends the stream (or it breaks); then stop the work left."""
        # The caller sends nothing before this: until then no call has left (NeverSent).
        await self._context.send_initial_metadata(((LIMIT_KEY, str(self._announce_bytes)),))
        writer = asyncio.get_running_loop().create_task(self._write())
        try:
            counters, prefix = self._counters, self._prefix
            async for message in calls:
                counters[prefix + "messages_received"] += 1
                batch = calls_of(message)
                if len(batch) > MAX_CALLS_PER_MESSAGE:  # type: ignore[arg-type]
                    await self._context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"a message of {len(batch)} calls; at most"  # type: ignore[arg-type]
                        f" {MAX_CALLS_PER_MESSAGE} are taken",
                    )
                for call in batch:
                    cancelled = cancelled_id(call)
                    if cancelled is not None:
                        self.cancel(cancelled)
                        continue
                    self._pending += 1
                    counters[prefix + "calls_received"] += 1
                    if self._pending > self._max_pending:
                        self.reply(self._refuse(call_id(call), _busy(self._max_pending)))
                        continue
                    handle(call, self)
                while len(self._outbox) >= self._max_pending:  # results not being read
                    self._room.clear()
                    await self._room.wait()
        finally:
            self._closed = True
            for task in list(self._tasks.values()):
                task.cancel()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _refuse(self, call_id: int, message: str) -> T:
        return self._failed(call_id, pb.CallError(code="RESOURCE_EXHAUSTED", message=message))

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._pending:  # calls still being worked on: their results may join
                await gather_burst(self._outbox)
            while self._outbox:
                results, self._outbox = self._outbox, []
                self._room.set()
                for message in self._messages(results):
                    await self._context.write(self._make_message(message))
                    self._counters[self._prefix + "messages_replied"] += 1

    def _messages(self, results: list[T]) -> Iterable[list[T]]:
        """The results in messages under the limit (a few MiB each); one too large for any
        message is answered RESOURCE_EXHAUSTED instead."""
        target = min(MESSAGE_TARGET_BYTES, self._max_message_bytes)
        message: list[T] = []
        size = 0
        for result in results:
            length = result.ByteSize() + _RESULT_FRAMING
            if length > self._max_message_bytes:
                result = self._refuse(
                    result.id,
                    f"the answer is {length} bytes, more than a message may be"
                    f" ({self._max_message_bytes}): ask for less at once",
                )
                length = result.ByteSize() + _RESULT_FRAMING
            if message and size + length > target:
                yield message
                message, size = [], 0
            message.append(result)
            size += length
        if message:
            yield message


def _busy(limit: int) -> str:
    return f"{limit} calls of this stream are being worked on: try again shortly"

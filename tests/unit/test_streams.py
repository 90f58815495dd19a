"""kvstore.rpc.streams over real gRPC on 127.0.0.1, in process: many calls per message,
per-call deadlines, errors and cancellation, a stream that breaks mid-batch, reconnection,
and the bound on the bytes in flight to a peer that does not answer.

The receiving end is a StreamSession on the peer stream's messages, with a handler that
reads its orders from a read call's key: `ok:<n>` answers at once, `fail:<n>` answers with
an error, `slow:<ms>:<n>` answers after a while, `hang:<n>` never answers (until cancelled),
`big:<bytes>:<n>` answers with a record that large, `die:<n>` ends the stream with an
error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.rpc.session import StreamSession
from kvstore.rpc.streams import (
    MAX_OPEN_MESSAGES,
    CallStream,
    CallTooLarge,
    NeverSent,
    OutcomeUnknown,
)
from kvstore.rpc.wire import read_call

METHOD = "/test.Streams/Calls"


class Receiver:
    """The receiving end, recording what it saw."""

    def __init__(self) -> None:
        self.messages = 0
        self.calls: list[bytes] = []
        self.cancelled: list[bytes] = []
        self.streams = 0
        self.dying: asyncio.Future[None] | None = None
        self.max_pending = 1000
        self.max_message_bytes = 1 << 22

    async def handle_stream(
        self, calls: AsyncIterator[pb.PeerCalls], context: grpc.aio.ServicerContext
    ) -> None:
        self.streams += 1
        session: StreamSession[pb.PeerCall, pb.PeerResult] = StreamSession(
            context,
            lambda results: pb.PeerResults(results=results),
            lambda call_id, error: pb.PeerResult(id=call_id, error=error),
            max_pending=self.max_pending,
            max_message_bytes=self.max_message_bytes,
        )

        def count(message: pb.PeerCalls) -> Any:
            self.messages += 1
            return message.calls

        def cancel_of(call: pb.PeerCall) -> int | None:
            return call.id if call.HasField("cancel") else None

        await session.serve(
            calls, count, cancel_of, lambda call: call.id, lambda c, s: self.on_call(c, s, context)
        )

    def on_call(
        self,
        call: pb.PeerCall,
        session: StreamSession[pb.PeerCall, pb.PeerResult],
        context: grpc.aio.ServicerContext,
    ) -> None:
        key = call.read.key
        self.calls.append(key)
        order = key.split(b":")[0]
        found = pb.PeerResult(id=call.id, read=pb.EncodedRead(found=False))
        if order == b"ok":
            session.reply(found)
        elif order == b"fail":
            error = pb.CallError(code="INVALID_ARGUMENT", error="InvalidKey", message="no")
            session.reply(pb.PeerResult(id=call.id, error=error))
        elif order in (b"slow", b"hang"):
            delay = float(key.split(b":")[1]) / 1000 if order == b"slow" else 3600.0

            async def later() -> None:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    self.cancelled.append(key)
                    # Every call is answered once, a cancelled one too (as the servicers do).
                    session.reply(pb.PeerResult(id=call.id, error=pb.CallError(code="CANCELLED")))
                    raise
                session.reply(found)

            task = asyncio.ensure_future(later())
            session.track(call.id, task)
        elif order == b"big":  # an answer of that many bytes
            size = int(key.split(b":")[1])
            session.reply(
                pb.PeerResult(id=call.id, read=pb.EncodedRead(found=True, record=b"r" * size))
            )
        elif order == b"die":
            dying = asyncio.ensure_future(context.abort(grpc.StatusCode.INTERNAL, "die"))
            # abort ends its task with AbortError: take it, or it is logged at collection.
            dying.add_done_callback(lambda task: task.cancelled() or task.exception())
            self.dying = dying


class Server:
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self.receiver.handle_stream,
            request_deserializer=pb.PeerCalls.FromString,
            response_serializer=pb.PeerResults.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Streams", {"Calls": handler}),)
        )
        self.port = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None


def make_stream(
    port: int,
    *,
    max_inflight_bytes: int = 1 << 24,
    max_message_bytes: int = 1 << 22,
    wait_for_ready: bool = True,
    max_open_messages: int = MAX_OPEN_MESSAGES,
    hold_s: float | None = None,
) -> tuple[CallStream[pb.PeerResult], grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 200),
        ],
    )
    open_call = channel.stream_stream(
        METHOD, request_serializer=None, response_deserializer=pb.PeerResults.FromString
    )
    stream: CallStream[pb.PeerResult] = CallStream(
        "test",
        channel,
        lambda: open_call(wait_for_ready=wait_for_ready),
        lambda message: message.results,
        max_inflight_bytes=max_inflight_bytes,
        max_message_bytes=max_message_bytes,
        wait_for_ready=wait_for_ready,
        max_open_messages=max_open_messages,
        hold_s=hold_s,
    )
    return stream, channel


def run(scenario: Callable[[Server], Awaitable[None]]) -> None:
    async def main() -> None:
        server = Server(Receiver())
        await server.start()
        try:
            await asyncio.wait_for(scenario(server), timeout=30)
        finally:
            await server.stop()

    asyncio.run(main())


async def outcomes(calls: list[Awaitable[pb.PeerResult]]) -> list[Any]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


def test_calls_made_together_leave_in_one_message_and_each_gets_its_own_result() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        await stream.call(read_call(b"ok:warm"), 5)  # open the stream first
        before = server.receiver.messages
        keys = [f"ok:{i}".encode() for i in range(50)]
        results = await outcomes([stream.call(read_call(k), 5) for k in keys])
        assert all(isinstance(r, pb.PeerResult) and r.HasField("read") for r in results)
        assert len({r.id for r in results}) == 50
        assert server.receiver.messages - before == 1
        assert server.receiver.calls[-50:] == keys
        assert stream.inflight_bytes == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_call_that_fails_does_not_fail_its_neighbours() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        keys = [b"ok:1", b"fail:2", b"ok:3", b"slow:50:4", b"fail:5", b"ok:6"]
        results = await outcomes([stream.call(read_call(k), 5) for k in keys])
        kinds = [r.WhichOneof("result") for r in results]
        assert kinds == ["read", "error", "read", "read", "error", "read"]
        assert results[1].error.error == "InvalidKey"
        await stream.close()
        await channel.close()

    run(scenario)


def test_each_call_keeps_its_own_deadline() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        loop = asyncio.get_running_loop()
        began = loop.time()
        short = asyncio.ensure_future(stream.call(read_call(b"hang:1"), 0.2))
        long = asyncio.ensure_future(stream.call(read_call(b"slow:400:2"), 3))
        with pytest.raises(OutcomeUnknown) as failed:
            await short
        assert failed.value.deadline
        assert 0.15 < loop.time() - began < 1.0
        assert (await long).HasField("read")  # its neighbour's deadline did not touch it
        assert stream.inflight_bytes == 0 and stream.open_messages == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_cancelled_caller_cancels_its_call_at_the_receiver() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        waiting = asyncio.ensure_future(stream.call(read_call(b"hang:7"), 30))
        for _ in range(100):
            if b"hang:7" in server.receiver.calls:
                break
            await asyncio.sleep(0.01)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        for _ in range(100):
            if server.receiver.cancelled:
                break
            await asyncio.sleep(0.01)
        assert server.receiver.cancelled == [b"hang:7"]
        assert (await stream.call(read_call(b"ok:after"), 5)).HasField("read")
        assert stream.inflight_bytes == 0 and stream.open_messages == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_broken_stream_fails_its_calls_in_flight_as_unknown_and_the_next_call_reconnects() -> (
    None
):
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        in_flight = [stream.call(read_call(f"hang:{i}".encode()), 10) for i in range(5)]
        die = stream.call(read_call(b"die:0"), 10)
        results = await outcomes([*in_flight, die])
        assert all(isinstance(r, OutcomeUnknown) and not r.deadline for r in results)
        # Each call reached the receiver once; nothing is sent again on the new stream.
        assert sorted(server.receiver.calls) == sorted(
            [f"hang:{i}".encode() for i in range(5)] + [b"die:0"]
        )
        assert (await stream.call(read_call(b"ok:again"), 5)).HasField("read")
        assert stream.streams_opened == 2 and server.receiver.streams == 2
        assert server.receiver.calls.count(b"hang:0") == 1
        assert stream.open_messages == 0 and stream.inflight_bytes == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_receiver_that_goes_away_fails_calls_in_flight_as_unknown() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port, wait_for_ready=False)
        waiting = [stream.call(read_call(f"hang:{i}".encode()), 10) for i in range(3)]
        gathered = asyncio.ensure_future(outcomes(waiting))
        for _ in range(100):
            if len(server.receiver.calls) == 3:
                break
            await asyncio.sleep(0.01)
        await server.stop()
        results = await gathered
        assert all(isinstance(r, OutcomeUnknown) for r in results)
        # With nothing listening, a call never leaves: it may be sent elsewhere.
        with pytest.raises(NeverSent):
            await stream.call(read_call(b"ok:1"), 2, fail_fast=True)
        await stream.close()
        await channel.close()

    run(scenario)


def test_calls_to_an_address_where_nothing_listens_are_never_sent() -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        await server.stop()
        stream, channel = make_stream(port)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(NeverSent):  # fails as soon as the channel reports the failure
            await stream.call(read_call(b"ok:1"), 5, fail_fast=True)
        assert loop.time() - began < 3
        with pytest.raises(NeverSent):  # waits for a connection within its deadline
            await stream.call(read_call(b"ok:2"), 0.3)
        # The node comes back on the same port: the waiting stream connects.
        await server.start(port)
        assert (await stream.call(read_call(b"ok:3"), 5)).HasField("read")
        await stream.close()
        await channel.close()

    run(scenario)


def test_the_bytes_in_flight_to_a_peer_that_does_not_answer_stay_bounded() -> None:
    async def scenario(server: Server) -> None:
        bound = 20_000
        stream, channel = make_stream(server.port, max_inflight_bytes=bound)
        padding = b"x" * 1000
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, stream.inflight_bytes)
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        # The first calls fill the room and wait 2 s for answers that never come; the rest
        # wait for room, which does not come within their 0.3 s.
        keys = [b"hang:" + padding + bytes([i]) for i in range(100)]
        calls = [stream.call(read_call(key), 2.0 if i < 40 else 0.3) for i, key in enumerate(keys)]
        results = await outcomes(calls)
        watcher.cancel()
        await asyncio.sleep(0.2)  # what did leave has reached the receiver
        assert peak <= bound
        sent = {k for k, r in zip(keys, results, strict=True) if isinstance(r, OutcomeUnknown)}
        held_back = {k for k, r in zip(keys, results, strict=True) if isinstance(r, NeverSent)}
        assert len(sent) + len(held_back) == 100
        # The short calls never got room: none of them left. (Of the long ones, those let
        # in as the first expired may leave too, just before their own deadline.)
        assert set(keys[40:]) <= held_back
        assert len(sent) >= 10
        assert set(server.receiver.calls) == sent  # those held back never left
        assert stream.inflight_bytes == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_call_larger_than_a_message_is_refused_before_it_leaves() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port, max_message_bytes=10_000)
        with pytest.raises(CallTooLarge):
            await stream.call(read_call(b"ok:" + b"x" * 20_000), 5)
        assert (await stream.call(read_call(b"ok:small"), 5)).HasField("read")
        assert server.receiver.calls == [b"ok:small"]
        await stream.close()
        await channel.close()

    run(scenario)


def test_messages_never_exceed_the_message_limit() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port, max_message_bytes=10_000)
        await stream.call(read_call(b"ok:warm"), 5)
        before = server.receiver.messages
        keys = [b"ok:" + b"y" * 900 + bytes([i]) for i in range(40)]  # ~37 KB in all
        results = await outcomes([stream.call(read_call(k), 5) for k in keys])
        assert all(isinstance(r, pb.PeerResult) for r in results)
        assert server.receiver.messages - before >= 4
        await stream.close()
        await channel.close()

    run(scenario)


def test_close_fails_what_is_queued_and_in_flight() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        waiting = asyncio.ensure_future(outcomes([stream.call(read_call(b"hang:1"), 10)]))
        await asyncio.sleep(0.2)
        await stream.close()
        (result,) = await waiting
        assert isinstance(result, OutcomeUnknown)
        with pytest.raises(NeverSent):
            await stream.call(read_call(b"ok:1"), 1)
        await channel.close()

    run(scenario)


@pytest.mark.parametrize("window", [1, 2])
def test_calls_wait_while_messages_are_unanswered_then_leave_together(window: int) -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port, max_open_messages=window, hold_s=10)
        await stream.call(read_call(b"ok:warm"), 5)
        before = server.receiver.messages
        slow = []
        for i in range(window):  # each alone in a message that stays unanswered ~0.3 s
            slow.append(asyncio.ensure_future(stream.call(read_call(f"slow:300:{i}".encode()), 5)))
            await asyncio.sleep(0.05)
        assert server.receiver.messages - before == window
        # The window is full: these wait, and leave in one message when the first answer
        # comes (~0.3 s), not one by one.
        later = [stream.call(read_call(f"ok:{i}".encode()), 5) for i in range(10)]
        waiting = asyncio.ensure_future(outcomes(later))
        await asyncio.sleep(0.1)
        assert server.receiver.messages - before == window and not waiting.done()
        results = await waiting
        assert all(isinstance(r, pb.PeerResult) for r in results)
        assert server.receiver.messages - before == window + 1
        await asyncio.gather(*slow)
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_slow_call_does_not_hold_up_the_calls_behind_it() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)  # the default window and time bound
        await stream.call(read_call(b"ok:warm"), 5)
        loop = asyncio.get_running_loop()
        slow = asyncio.ensure_future(stream.call(read_call(b"slow:500:1"), 5))
        await asyncio.sleep(0.02)
        began = loop.time()
        results = await outcomes([stream.call(read_call(f"ok:{i}".encode()), 5) for i in range(10)])
        assert all(isinstance(r, pb.PeerResult) for r in results)
        assert loop.time() - began < 0.3 and not slow.done()  # answered long before it
        await slow
        assert stream.open_messages == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_lone_call_leaves_at_once() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port)
        await stream.call(read_call(b"ok:warm"), 5)
        before = server.receiver.messages
        loop = asyncio.get_running_loop()
        began = loop.time()
        for i in range(20):  # one at a time: each is alone, and nothing holds it back
            await stream.call(read_call(f"ok:{i}".encode()), 5)
        assert server.receiver.messages - before == 20
        assert loop.time() - began < 1.0
        await stream.close()
        await channel.close()

    run(scenario)


def test_an_answer_too_large_for_a_message_fails_alone_and_many_answers_are_split() -> None:
    async def scenario(server: Server) -> None:
        server.receiver.max_message_bytes = 200_000  # this receiver's announced limit
        stream, channel = make_stream(server.port)
        await stream.call(read_call(b"ok:warm"), 5)
        keys = [b"big:150000:1", b"big:300000:2", b"ok:3", b"big:150000:4", b"big:150000:5"]
        results = await outcomes([stream.call(read_call(k), 5) for k in keys])
        kinds = [r.WhichOneof("result") for r in results]
        assert kinds == ["read", "error", "read", "read", "read"]
        assert results[1].error.code == "RESOURCE_EXHAUSTED"
        assert stream.streams_opened == 1  # the stream lived through it
        await stream.close()
        await channel.close()

    run(scenario)


def test_a_call_larger_than_the_receivers_limit_fails_alone_before_it_leaves() -> None:
    async def scenario(server: Server) -> None:
        server.receiver.max_message_bytes = 100_000
        stream, channel = make_stream(server.port, max_message_bytes=1 << 22)
        await stream.call(read_call(b"ok:warm"), 5)  # learns the limit the receiver announced
        with pytest.raises(CallTooLarge):
            await stream.call(read_call(b"ok:" + b"x" * 150_000), 5)
        # Many calls that fit alone but not together go in several messages.
        results = await outcomes(
            [stream.call(read_call(b"ok:" + b"y" * 40_000 + bytes([i])), 5) for i in range(6)]
        )
        assert all(isinstance(r, pb.PeerResult) for r in results)
        assert stream.streams_opened == 1
        assert all(len(k) < 100_000 for k in server.receiver.calls)
        await stream.close()
        await channel.close()

    run(scenario)


def test_calls_past_the_receivers_pending_bound_are_refused_alone() -> None:
    async def scenario(server: Server) -> None:
        server.receiver.max_pending = 5
        stream, channel = make_stream(server.port)
        hanging = [stream.call(read_call(f"hang:{i}".encode()), 1.0) for i in range(8)]
        results = await outcomes(hanging)
        refused = [r for r in results if isinstance(r, pb.PeerResult)]
        assert len(refused) == 3 and all(r.error.code == "RESOURCE_EXHAUSTED" for r in refused)
        assert sum(isinstance(r, OutcomeUnknown) for r in results) == 5
        # Their callers gave up: the receiver was told (cancels), and has room again.
        await asyncio.sleep(0.2)
        assert sorted(server.receiver.cancelled) == [f"hang:{i}".encode() for i in range(5)]
        assert (await stream.call(read_call(b"ok:after"), 5)).HasField("read")
        assert stream.open_messages == 0 and stream.inflight_bytes == 0
        await stream.close()
        await channel.close()

    run(scenario)


def test_close_fails_the_callers_waiting_for_room_at_once() -> None:
    async def scenario(server: Server) -> None:
        stream, channel = make_stream(server.port, max_inflight_bytes=2_000)
        first = asyncio.ensure_future(stream.call(read_call(b"hang:" + b"x" * 1500), 30))
        await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(stream.call(read_call(b"hang:" + b"y" * 1500), 30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await stream.close()
        with pytest.raises(NeverSent):
            await waiting
        with pytest.raises(OutcomeUnknown):
            await first
        assert loop.time() - began < 2
        await channel.close()

    run(scenario)


class FakeCall:
    """A stream call that fails its next write as grpc does on a call already ended
    (InvalidStateError: nothing left), then behaves."""

    def __init__(self, fail_first_write: bool) -> None:
        self.written: list[bytes] = []
        self.fail_first_write = fail_first_write
        self.results: asyncio.Queue[Any] = asyncio.Queue()
        self.ended = False

    async def initial_metadata(self) -> tuple[()]:
        return ()

    def done(self) -> bool:
        return self.ended

    async def write(self, message: bytes) -> None:
        if self.fail_first_write:
            self.fail_first_write = False
            raise asyncio.InvalidStateError("RPC already finished.")
        self.written.append(message)

    async def read(self) -> Any:
        return await self.results.get()

    def cancel(self) -> None:
        if not self.ended:
            self.ended = True
            self.results.put_nowait(grpc.aio.EOF)

    def add_done_callback(self, callback: Any) -> None:
        pass

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED


class FakeChannel:
    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY


def test_calls_whose_write_never_left_go_once_on_the_next_stream() -> None:
    async def scenario() -> None:
        calls = [FakeCall(fail_first_write=True), FakeCall(fail_first_write=False)]
        opened = iter(calls)
        stream: CallStream[pb.PeerResult] = CallStream(
            "fake", FakeChannel(), lambda: next(opened), lambda m: m.results,  # type: ignore[arg-type]
            max_inflight_bytes=1 << 20, max_message_bytes=1 << 20, wait_for_ready=False,
        )  # fmt: skip
        futures = [stream.submit(read_call(f"k{i}".encode()), 5) for i in range(3)]
        for _ in range(50):
            if calls[1].written:
                break
            await asyncio.sleep(0.01)
        assert calls[0].written == []  # the first stream carried nothing
        (message,) = calls[1].written  # the second carried them all, once
        sent = pb.PeerCalls.FromString(message).calls
        assert [c.read.key for c in sent] == [b"k0", b"k1", b"k2"]
        assert not any(f.done() for f in futures)  # not failed: they never left
        calls[1].results.put_nowait(
            pb.PeerResults(results=[pb.PeerResult(id=c.id, read=pb.EncodedRead()) for c in sent])
        )
        answers = await asyncio.gather(*futures)
        assert [a.id for a in answers] == [c.id for c in sent]
        assert stream.open_messages == 0 and stream.inflight_bytes == 0
        await stream.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))

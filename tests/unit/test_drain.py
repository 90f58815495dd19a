"""The drain state machine (kvstore.node.drain): the client gate, waiting for calls in
flight, delivering hints now, and stopping only after the answer; and the client servicer
consulting the gate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.maintenance import DrainReport
from kvstore.core.requests import PutAnswer, PutCommand
from kvstore.errors import ClusterRefused, Draining, InvalidArgument, Unavailable
from kvstore.node.clock import SystemClock
from kvstore.node.drain import MAX_DRAIN_TIMEOUT_MS, Drain, DrainState
from kvstore.rpc.servicers import KVServicer

T = TypeVar("T")


class Hints:
    """Hints held, delivered `per_round` a round while their target is up."""

    def __init__(self, held: int, per_round: int = 2, up: bool = True) -> None:
        self.held = held
        self.per_round = per_round
        self.up = up
        self.rounds = 0

    async def deliver(self) -> int:
        self.rounds += 1
        await asyncio.sleep(0)
        if not self.up:
            return 0
        delivered = min(self.held, self.per_round)
        self.held -= delivered
        return delivered


def make(hints: Hints, events: list[str] | None = None) -> Drain:
    log = [] if events is None else events

    async def on_draining() -> None:
        log.append("not serving")

    return Drain(
        SystemClock(),
        hints.deliver,
        lambda: hints.held,
        on_draining=on_draining,
        exit=lambda: log.append("exit"),
    )


def run(make_work: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make_work()

    return asyncio.run(main())


def test_a_serving_node_lets_calls_in_and_counts_them() -> None:
    drain = make(Hints(0))
    drain.enter()
    drain.enter()
    assert drain.inflight == 2
    drain.leave()
    drain.leave()
    assert drain.inflight == 0 and drain.state is DrainState.SERVING
    with pytest.raises(AssertionError):
        drain.leave()  # a leave without its enter is a bug, not a count below zero


def test_draining_refuses_new_calls_as_unavailable_and_turns_health_first() -> None:
    events: list[str] = []
    hints = Hints(5)
    drain = make(hints, events)
    report = run(lambda: drain.drain(timeout_ms=5_000, stay=False))
    assert drain.state is DrainState.DRAINED
    with pytest.raises(Draining, match="draining") as refused:
        drain.enter()
    assert isinstance(refused.value, Unavailable)  # the typed error clients retry elsewhere
    assert drain.inflight == 0
    assert events == ["not serving"]  # once, and no exit before the answer
    assert report == DrainReport(hints_delivered=5, hints_left=0, exiting=True)
    assert hints.rounds == 3  # 2 + 2 + 1: rounds until none are left, then no more


def test_the_drain_waits_for_calls_in_flight_before_delivering_hints() -> None:
    hints = Hints(1)
    drain = make(hints)

    async def scenario() -> tuple[bool, int, DrainReport]:
        drain.enter()
        task = asyncio.ensure_future(drain.drain(timeout_ms=30_000))
        for _ in range(20):
            await asyncio.sleep(0)
        waiting = not task.done()
        rounds_meanwhile = hints.rounds
        # New calls are refused while the one in flight goes on.
        with pytest.raises(Draining):
            drain.enter()
        drain.leave()
        return waiting, rounds_meanwhile, await task

    waiting, rounds_meanwhile, report = run(scenario)
    assert waiting and rounds_meanwhile == 0
    assert report.hints_delivered == 1 and report.hints_left == 0


def test_calls_that_never_end_and_hints_that_cannot_go_are_bounded_by_the_timeout() -> None:
    hints = Hints(3, up=False)
    drain = make(hints)

    async def scenario() -> DrainReport:
        drain.enter()  # never leaves
        return await drain.drain(timeout_ms=300, stay=True)

    report = run(scenario)
    assert report == DrainReport(hints_delivered=0, hints_left=3, exiting=False)
    assert drain.state is DrainState.DRAINED


def test_hints_whose_target_comes_up_during_the_drain_are_delivered() -> None:
    hints = Hints(4, per_round=4, up=False)
    drain = make(hints)

    async def scenario() -> DrainReport:
        task = asyncio.ensure_future(drain.drain(timeout_ms=30_000))
        while hints.rounds < 2:  # bounded: the drain retries every HINT_RETRY_S
            await asyncio.sleep(0.05)
        hints.up = True
        return await task

    report = run(scenario)
    assert report.hints_delivered == 4 and report.hints_left == 0


def test_a_failing_round_is_retried_not_fatal() -> None:
    hints = Hints(2)
    failures = [RuntimeError("disk hiccup")]

    async def flaky() -> int:
        if failures:
            raise failures.pop()
        return await hints.deliver()

    drain = Drain(SystemClock(), flaky, lambda: hints.held)
    report = run(lambda: drain.drain(timeout_ms=10_000))
    assert report.hints_delivered == 2 and report.hints_left == 0


def test_the_process_stops_only_once_answered_and_only_if_not_staying() -> None:
    events: list[str] = []
    drain = make(Hints(0), events)
    stayed = run(lambda: drain.drain(stay=True))
    drain.answered(stayed)
    assert events == ["not serving"]
    # A second drain after one that stayed runs again (hints may have come since).
    leaving = run(lambda: drain.drain(stay=False))
    assert events == ["not serving", "not serving"]
    drain.answered(leaving)
    assert events[-1] == "exit"


@pytest.mark.parametrize("timeout_ms", [-1, MAX_DRAIN_TIMEOUT_MS + 1])
def test_a_bad_timeout_is_refused_and_changes_nothing(timeout_ms: int) -> None:
    events: list[str] = []
    drain = make(Hints(1), events)
    with pytest.raises(InvalidArgument, match="timeout_ms"):
        run(lambda: drain.drain(timeout_ms=timeout_ms))
    assert drain.state is DrainState.SERVING and events == []
    drain.enter()  # still takes calls


def test_a_second_drain_while_one_runs_is_refused() -> None:
    drain = make(Hints(0))

    async def scenario() -> None:
        drain.enter()
        first = asyncio.ensure_future(drain.drain(timeout_ms=30_000))
        await asyncio.sleep(0)
        with pytest.raises(ClusterRefused, match="already"):
            await drain.drain()
        drain.leave()
        await first

    run(scenario)
    assert drain.state is DrainState.DRAINED


def test_a_cancelled_drain_leaves_the_node_out_of_client_traffic() -> None:
    drain = make(Hints(0))

    async def scenario() -> None:
        drain.enter()
        task = asyncio.ensure_future(drain.drain(timeout_ms=30_000))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)
    assert drain.state is DrainState.DRAINED
    with pytest.raises(Draining):
        drain.enter()


# ---- the client servicer consults the gate ----


class _Aborted(Exception):
    pass


class _Context:
    """What KVServicer uses of a grpc.aio.ServicerContext on a unary call."""

    def __init__(self) -> None:
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.code: grpc.StatusCode | None = None

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise _Aborted(details)


class _Coordinator:
    def __init__(self, drain: Drain) -> None:
        self.drain = drain
        self.inflight_seen: list[int] = []

    async def put(self, command: PutCommand, hops: int = 0) -> PutAnswer:
        self.inflight_seen.append(self.drain.inflight)
        return PutAnswer(context=b"ctx")


def test_the_client_servicer_counts_unary_calls_and_refuses_them_once_draining() -> None:
    drain = make(Hints(0))
    coordinator = _Coordinator(drain)
    servicer = KVServicer(coordinator, None, gate=drain)  # type: ignore[arg-type]
    request = pb.PutRequest(key=b"k", value=b"v")

    async def scenario() -> _Context:
        answer = await servicer.Put(request, _Context())
        assert answer.context == b"ctx"
        await drain.drain(stay=True)
        refused = _Context()
        with pytest.raises(_Aborted, match="draining"):
            await servicer.Put(request, refused)
        return refused

    refused = run(scenario)
    assert coordinator.inflight_seen == [1]  # counted while it ran; not run once draining
    assert drain.inflight == 0
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert ("kvstore-error", "Draining") in refused.metadata

"""The Coordinator: gets, puts and deletes for clients, driving the sans-IO quorum state
machines of kvstore.core.coordinator over the transport seam.

One driver serves reads and writes (`_Request`): it starts the replica calls an FSM asks
for, feeds it their replies and failures as each call ends (a callback, not a task of its
own), answers the client as soon as the FSM decides, and keeps going (in the background)
until every call has ended or the deadline. A write is
applied here first, as the coordinating replica (Replica.write), and the stored record's
bytes are shipped to the other replicas; a node that is not a replica of the key forwards
the put to one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from kvstore.core import versions
from kvstore.core.coordinator import (
    GetCoordinator,
    MergeReplica,
    Outcome,
    PutCoordinator,
    QuorumRequest,
    ReadReplica,
)
from kvstore.core.limits import Limits, Quorum
from kvstore.core.requests import ForwardedPut, GetAnswer, PutAnswer, PutCommand
from kvstore.core.ring import RoutedKey, routed
from kvstore.core.transport import PeerFailure, PeerTransport, PeerUnreachable
from kvstore.core.versions import KeyState
from kvstore.errors import InternalError, KvError, Unavailable
from kvstore.node.clock import Cancellable, Clock
from kvstore.node.replica import Replica, answer
from kvstore.node.router import Route, Router
from kvstore.node.tasks import TaskSet
from kvstore.storage.codec import decode_context, encode_context, encode_record

log = logging.getLogger(__name__)

# A write reaching a non-replica is forwarded to a replica. Right after a ring change the
# nodes' rings disagree until gossip has spread the new one (a second or two): a receiver
# with an older ring than the sender's first catches up from it, one with a newer ring
# forwards again by its own. The bound stops a loop between nodes that keep disagreeing.
MAX_FORWARD_HOPS = 3

A = TypeVar("A", ReadReplica, MergeReplica)


class Coordinator:
    def __init__(
        self,
        address: str,
        router: Router,
        replica: Replica,
        transport: PeerTransport,
        clock: Clock,
        limits: Limits,
        quorum: Quorum,
        replica_timeout_ms: int,
        counters: Counter[str],
        tasks: TaskSet,
        catch_up: Callable[[str], Awaitable[None]] | None = None,
        fence: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        # Raises Unavailable right after this node's loop stood still (node.stallfence).
        self._fence = fence
        self._router = router
        self._replica = replica
        self._transport = transport
        self._clock = clock
        self._limits = limits
        self._quorum = quorum
        self._replica_timeout_s = replica_timeout_ms / 1000
        self._counters = counters
        self._tasks = tasks
        # How a forwarded put's receiver with an older ring catches up from its sender.
        self._catch_up = catch_up

    # ---- reads ----

    async def get(
        self, key: bytes, r: int = 0, timeout_ms: int = 0, strict: bool = False
    ) -> GetAnswer:
        where, state = await self.read(key, r, timeout_ms, strict)
        return answer(where, state)

    async def read(
        self, key: bytes, r: int = 0, timeout_ms: int = 0, strict: bool = False
    ) -> tuple[RoutedKey, KeyState]:
        """The merged state `r` replicas hold (Unavailable if fewer answer in time)."""
        self._limits.check_key(key)
        required = self._quorum.read_quorum(r)
        deadline = self._deadline(timeout_ms)
        where = routed(key)
        route = self._router.route(where, strict)
        fsm = GetCoordinator(route.primaries, required, route.fallbacks, route.down)

        def call(action: ReadReplica) -> Awaitable[KeyState | None]:
            if action.target == self.address:
                return _now(self._replica.read, where)
            return self._transport.read(action.target, key, self._remaining(deadline))

        request = _Request(fsm, call, fsm.on_reply, deadline, self._clock)
        request.finished.add_done_callback(lambda done: self._repair_if_stale(done, where, fsm))
        self._tasks.spawn(request.finished)
        request.start(fsm.start())
        await request.decided
        if fsm.outcome is not Outcome.SUCCEEDED:
            self._counters["quorum_failures"] += 1
            raise fsm.unavailable(_why(fsm.outcome))
        return where, fsm.result()

    def _repair_if_stale(
        self, done: asyncio.Future[None], key: RoutedKey, fsm: GetCoordinator
    ) -> None:
        """Once a read's calls are over: repair the primaries that answered with less."""
        if done.cancelled() or len(fsm.replies) < 2:
            return
        merged = fsm.result()
        stale = fsm.stale_targets(merged)
        if stale:
            self._tasks.spawn(self._read_repair(key, merged, stale))

    async def _read_repair(self, key: RoutedKey, merged: KeyState, stale: list[str]) -> None:
        """Send the merged state to the primaries that answered with less."""
        record = encode_record(merged)
        timeout = self._limits.request_timeout_ms / 1000
        for target in stale:
            try:
                if target == self.address:
                    await self._replica.merge(key, merged)
                else:
                    await self._transport.merge(target, key.key, record, timeout)
                self._counters["read_repairs"] += 1
            except (PeerFailure, KvError) as exc:
                log.info("read repair of a key on %s failed: %s", target, exc)

    # ---- batches ----

    async def get_many(
        self, keys: Sequence[bytes], r: int = 0, timeout_ms: int = 0, strict: bool = False
    ) -> list[GetAnswer | KvError]:
        """Each key read as `get` would read it, all at once: per-key answers or errors, in
        order. The batch's own options are checked first (a bad one fails it whole). The
        keys' replica calls leave together (one message per peer stream), their reads are
        local RocksDB reads."""
        self._limits.check_batch(len(keys))
        self._quorum.read_quorum(r)
        self._limits.timeout_ms(timeout_ms)
        return _per_item(
            await asyncio.gather(
                *(self.get(key, r, timeout_ms, strict) for key in keys), return_exceptions=True
            )
        )

    async def put_many(self, commands: Sequence[PutCommand]) -> list[PutAnswer | KvError]:
        """Each put coordinated as `put` would, all at once: per-item answers or errors, in
        order. Their writes here commit in one WriteBatch (the group commit), their merges
        leave together for each replica, which commits them together too."""
        self._limits.check_batch(len(commands))
        for command in commands[:1]:
            self._quorum.write_quorum(command.w)
            self._limits.timeout_ms(command.timeout_ms)
        return _per_item(
            await asyncio.gather(
                *(self.put(command) for command in commands), return_exceptions=True
            )
        )

    # ---- writes ----

    async def put(self, command: PutCommand, hops: int = 0) -> PutAnswer:
        """Coordinate a put or delete (`value` None). The answer's context is exact: the
        context sent plus the new write, never a concurrent sibling the writer was not
        shown; with `return_body`, the siblings after the write and a context covering them."""
        key = command.key
        self._limits.check_key(key)
        if command.value is not None:
            self._limits.check_value(command.value)
        self._limits.check_write_id(command.write_id)
        where = routed(key)
        context = decode_context(command.context, where)
        required = self._quorum.write_quorum(command.w)
        deadline = self._deadline(command.timeout_ms)
        route = self._router.route(where, command.strict)
        if self.address not in route.primaries:
            # Counted: ring-aware clients send each write to a primary, so forwards should
            # be rare (a ring change, a client without the ring).
            self._counters["puts_forwarded"] += 1
            return await self._forward(command, route, hops, deadline)

        if self._fence is not None:
            self._fence()
        fsm = PutCoordinator(self.address, route.primaries, required, route.fallbacks, route.down)
        written = self._replica.write(where, context, command.value, command.write_id)
        # Durable here before any other node sees the write's dot: were the commit to fail,
        # the next write would take the same dot, and two writes under one dot would be
        # taken for one by every merge. (A retry of a write applied here ships the record
        # as it stands, so that w replicas hold the write before it is answered: its first
        # try may have reached fewer.)
        await written.durable

        def call(action: MergeReplica) -> Awaitable[None]:
            # The state a write ships is the one stored: its bytes are sent as they were stored.
            return self._transport.merge(
                action.target, key, written.record, self._remaining(deadline), action.hint_for or ""
            )

        request = _Request(
            fsm,
            call,
            lambda target, _: fsm.on_ack(target),
            deadline,
            self._clock,
            slow=(self._replica_timeout_s, fsm.on_slow),
        )
        self._tasks.spawn(request.finished)
        request.start(fsm.start(written.state))
        # Partitions are moving: the pending owners get every write too, so the data they
        # pulled stays complete until the move is committed. Not counted in w.
        for target in self._router.incoming(where, route.primaries):
            self._tasks.spawn(self._copy(target, key, written.record, deadline))
        await request.decided
        if fsm.stand_ins:
            self._counters["sloppy_writes"] += 1
        if fsm.outcome is not Outcome.SUCCEEDED:
            self._counters["quorum_failures"] += 1
            raise fsm.unavailable(
                _why(fsm.outcome) + " (the write may be present on some replicas)"
            )
        state = written.state
        if command.return_body:
            return PutAnswer(encode_context(state.clock, where), tuple(state.live_values))
        if written.retried:
            # What the first try answered: the context it sent plus its write.
            exact = versions.retry_context(state, context, command.write_id)
            return PutAnswer(encode_context(exact, where))
        return PutAnswer(encode_context(versions.put_context(state, written.dot), where))

    async def forwarded_put(self, forward: ForwardedPut) -> PutAnswer:
        """A put another node handed here: catch up from the sender first if its ring is
        newer, so the two do not bounce it between an old ring and a new one. Only a ring
        member is dialled: the sender is named by the message, and a node that dialled any
        name it was given would connect wherever a forged message pointed it."""
        if (
            forward.ring_epoch > self._router.ring_epoch
            and self._catch_up
            and self._router.is_ring_member(forward.sender)
        ):
            await self._catch_up(forward.sender)
        return await self.put(forward.command, hops=forward.hops)

    async def _copy(self, target: str, key: bytes, record: bytes, deadline: float) -> None:
        try:
            await self._transport.merge(target, key, record, self._remaining(deadline))
        except (PeerFailure, KvError) as exc:
            log.info("copy of a write to pending owner %s failed: %s", target, exc)

    async def _forward(
        self, command: PutCommand, route: Route, hops: int, deadline: float
    ) -> PutAnswer:
        """Hand the write to a replica of the key: only replicas create dots. Primaries the
        failure detector holds up are tried first. The next one is tried only if no
        connection to the last could be made: a forward that timed out or was cut off may
        have been applied, and applying it again elsewhere would leave a second sibling of
        the same value under a dot its writer's context never covers (it would outlive the
        writer's later writes). Such a put fails instead, with its outcome unknown; a paused
        primary costs the writes sent to it until the detector holds it down (~2 gossip
        rounds past phi), after which it is tried last.
        """
        if hops >= MAX_FORWARD_HOPS:
            raise Unavailable(
                f"put forwarded {hops} times and {self.address} is still not a replica of the"
                " key: the nodes' rings disagree (a ring change still spreading?)"
            )
        tried: list[str] = []
        for target in sorted(route.primaries, key=lambda p: p in route.down):
            # The epoch as of this attempt: gossip may have moved it during the last one.
            forward = ForwardedPut(command, hops + 1, self._router.ring_epoch, self.address)
            try:
                return await self._transport.forward_put(target, forward, self._remaining(deadline))
            except PeerUnreachable:
                tried.append(f"{target} (unreachable)")
            except PeerFailure as exc:
                why = "no answer in time" if exc.code == "DEADLINE_EXCEEDED" else str(exc)
                raise Unavailable(
                    f"put forwarded to {target}: {why} (the write may be present on some replicas)"
                ) from exc
        raise Unavailable(f"put: no replica of the key could be reached (tried {', '.join(tried)})")

    def _deadline(self, timeout_ms: int) -> float:
        return self._clock.monotonic() + self._limits.timeout_ms(timeout_ms) / 1000

    def _remaining(self, deadline: float) -> float:
        return max(deadline - self._clock.monotonic(), 0.001)


# Turns of the event loop between a request's deadline and its end: a call whose own
# timeout ends at the deadline reports its failure within two (its task wakes and raises,
# then its done callback runs).
_DEADLINE_TURNS = 3


class _Request(Generic[A]):
    """One request's replica calls, driven by their completions: no task of its own, no
    waiting loop. Starts the calls the FSM asks for, feeds it each call's reply or failure
    as the call ends, starts the stand-ins it then asks for, and:

    - `decided` is done as soon as the FSM decides (the client's answer), or when the
      request ends undecided (the deadline);
    - `finished` is done once every call made has ended, the FSM is settled, or the
      deadline passed (the calls still running are then cancelled: a reply after the
      deadline is never seen). Cancelling `finished` (node shutdown) ends the request.

    `slow`: that many seconds after the start, each primary that has not answered is
    reported slow (a write's stand-ins)."""

    def __init__(
        self,
        fsm: QuorumRequest[A],
        call: Callable[[A], Awaitable[Any]],
        on_reply: Callable[[str, Any], object],
        deadline: float,
        clock: Clock,
        slow: tuple[float, Callable[[str], None]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.decided: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._fsm: QuorumRequest[A] = fsm
        self._call: Callable[[A], Awaitable[Any]] = call
        self._on_reply = on_reply
        self._calls: dict[asyncio.Future[Any], str] = {}
        self._timers: list[Cancellable] = [clock.call_at(deadline, self._deadline)]
        self._report_slow: Callable[[str], None] | None = None
        if slow is not None:
            self._report_slow = slow[1]
            self._timers.append(clock.call_at(clock.monotonic() + slow[0], self._slow))
        self.finished.add_done_callback(self._finished)

    def start(self, first: Sequence[A]) -> None:
        for action in first:
            self._start(action)
        self._check()

    def _start(self, action: A) -> None:
        future = asyncio.ensure_future(self._call(action))
        self._calls[future] = action.target
        future.add_done_callback(self._ended)

    def _ended(self, future: asyncio.Future[Any]) -> None:
        target = self._calls.pop(future, None)
        if target is None or self.finished.done():
            return
        fsm = self._fsm
        if future.cancelled():
            fsm.on_failure(target, "cancelled")
        elif (exc := future.exception()) is None:
            self._on_reply(target, future.result())
        elif isinstance(exc, PeerFailure | KvError):
            fsm.on_failure(target, str(exc))
        else:
            log.error("replica call to %s failed unexpectedly", target, exc_info=exc)
            fsm.on_failure(target, f"{type(exc).__name__}: {exc}")
        for action in fsm.take_actions():
            self._start(action)
        self._check()

    def _slow(self) -> None:
        if self.finished.done() or self._report_slow is None:
            return
        for target in self._fsm.targets:
            self._report_slow(target)
        for action in self._fsm.take_actions():
            self._start(action)
        self._check()

    def _deadline(self, turns: int = _DEADLINE_TURNS) -> None:
        """Time is up. The calls' own timeouts end at the same moment: the request ends a
        few turns of the loop later, once those have reported their failures; a call still
        out then (its answer on the way) is left unanswered."""
        if self.finished.done():
            return
        if turns > 0:
            asyncio.get_running_loop().call_soon(self._deadline, turns - 1)
            return
        self._end()

    def _check(self) -> None:
        if self._fsm.outcome is not Outcome.PENDING and not self.decided.done():
            self.decided.set_result(None)
        if not self._calls or self._fsm.settled:
            self._end()

    def _end(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def _finished(self, _: asyncio.Future[None]) -> None:
        """The request is over (or was cancelled): answer the client if not yet, stop the
        calls and timers left."""
        if not self.decided.done():
            self.decided.set_result(None)
        for timer in self._timers:
            timer.cancel()
        calls, self._calls = self._calls, {}
        for future in calls:
            future.cancel()


def _now(
    read: Callable[[RoutedKey], KeyState | None], key: RoutedKey
) -> Awaitable[KeyState | None]:
    """A local replica read as an awaitable already done (no task for it)."""
    future: asyncio.Future[KeyState | None] = asyncio.get_running_loop().create_future()
    try:
        future.set_result(read(key))
    except Exception as exc:
        future.set_exception(exc)
    return future


T = TypeVar("T")


def _per_item(outcomes: Sequence[T | BaseException]) -> list[T | KvError]:
    """gather's outcomes as a batch's items: a KvError is the item's error; anything else
    raised is a bug, logged, and the item's InternalError."""
    items: list[T | KvError] = []
    for outcome in outcomes:
        if isinstance(outcome, KvError) or not isinstance(outcome, BaseException):
            items.append(outcome)
            continue
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        log.error("batch item failed unexpectedly", exc_info=outcome)
        items.append(InternalError(f"{type(outcome).__name__}: {outcome}"))
    return items


def _why(outcome: Outcome) -> str:
    return "deadline reached" if outcome is Outcome.PENDING else "too many replicas failed"

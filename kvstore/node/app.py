"""The node: composition of config, storage, ring, peer transport and the sans-IO coordinators.

This is where time and I/O meet the pure core: it picks the replicas, starts the replica calls
as tasks, feeds their results to a coordinator and stops at its outcome or the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.config import NodeConfig
from kvstore.core import versions
from kvstore.core.cluster import MemberStatus
from kvstore.core.coordinator import (
    GetCoordinator,
    MergeReplica,
    Outcome,
    PutCoordinator,
)
from kvstore.core.membership import Membership
from kvstore.core.ring import Ring
from kvstore.core.versions import EMPTY, KeyState
from kvstore.errors import ClusterRefused, KvError, StorageError, TooManySiblings, Unavailable
from kvstore.rpc.peer import PeerClient, PeerFailure
from kvstore.rpc.status import error_from_rpc, is_transport_failure
from kvstore.storage.codec import MAX_RECORD_COUNTER, decode_context, encode_context
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

# A write reaching a non-replica is forwarded to a replica. Right after a ring change the
# nodes' rings disagree until gossip has spread the new one (a second or two): a receiver
# with an older ring than the sender's first catches up from it, one with a newer ring
# forwards again by its own. The bound stops a loop between nodes that keep disagreeing.
MAX_FORWARD_HOPS = 3


class Node:
    def __init__(
        self,
        config: NodeConfig,
        storage: Storage,
        actor: str,
        peers: PeerClient,
        membership: Membership,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.storage = storage
        self.actor = actor
        self.peers = peers
        self.membership = membership
        self.clock = clock
        self.address = config.advertise
        self.limits = config.limits
        self.background = config.background
        # Events worth an operator's eye (hints stored/delivered/dropped, read repairs, ...).
        self.counters: Counter[str] = Counter()
        self.ring: Ring | None = None
        self.pending_ring: Ring | None = None
        self.refresh_ring()
        # Replication, read repair and copies still running after the client was answered.
        self._background: set[asyncio.Future[Any]] = set()

    # ---- the ring ----

    def refresh_ring(self) -> None:
        """Rebuild the routing rings from the membership's ring state (after gossip)."""
        state = self.membership.ring
        n = self.config.quorum.n
        self.ring = None if state is None else Ring.from_layout(state.current, n)
        pending = None if state is None else state.pending
        self.pending_ring = None if pending is None else Ring.from_layout(pending, n)

    def require_ring(self) -> Ring:
        if self.ring is None:
            raise Unavailable(
                f"node {self.address} has no ring yet: it is waiting to hear from its seeds"
                f" ({', '.join(self.config.seeds) or 'none given'})"
            )
        return self.ring

    @property
    def ring_epoch(self) -> int:
        state = self.membership.ring
        return 0 if state is None else state.epoch

    def is_up(self, address: str) -> bool:
        return self.membership.is_up(address, self.clock())

    def info(self) -> pb.NodeInfoResponse:
        ring = self.ring
        return pb.NodeInfoResponse(
            node_id=self.config.node_id,
            actor=self.actor,
            address=self.address,
            members=list(ring.members) if ring else [],
            partitions=self.config.partitions,
            n=self.config.quorum.n,
        )

    def locate(self, key: bytes) -> pb.LocateResponse:
        self.limits.check_key(key)
        ring = self.require_ring()
        pending = self.pending_ring
        return pb.LocateResponse(
            ring_epoch=self.ring_epoch,
            primaries=ring.primaries(key),
            pending_primaries=pending.primaries(key) if pending else [],
        )

    # ---- operators ----

    def request_status(self, status: MemberStatus) -> None:
        """`kvstore join` (JOINING) or `kvstore leave` (LEAVING) asked of this node."""
        current = self.membership.me.status
        if status is MemberStatus.JOINING:
            if current in (MemberStatus.JOINING, MemberStatus.ACTIVE):
                return  # asked twice: already on its way, or in
            if current is not MemberStatus.STANDBY or self.ring is None:
                raise ClusterRefused(
                    f"node {self.address} is {current.value}"
                    + ("" if self.ring else " and has not heard from its seeds yet")
                    + ": only a standby node that knows the ring can join"
                )
        elif status is MemberStatus.LEAVING:
            if current in (MemberStatus.LEAVING, MemberStatus.LEFT):
                return
            ring = self.require_ring()
            if current is not MemberStatus.ACTIVE:
                raise ClusterRefused(f"node {self.address} is {current.value}, not active")
            if len(ring.members) <= 1:
                raise ClusterRefused("the last member of a ring cannot leave it")
        self.membership.set_status(status)
        log.info("asked to %s", "join" if status is MemberStatus.JOINING else "leave")

    def remove_member(self, address: str) -> None:
        """`kvstore remove`: take a dead member out of the ring (Cassandra's removenode,
        Riak's force-remove). Its partitions move to the others, rebuilt from the replicas
        that are up; a write only it held (with W=1) is lost with it. A member that is up
        must leave by itself: it hands its data off first."""
        membership = self.membership
        ring = self.require_ring()
        if address == self.address:
            raise ClusterRefused(
                f"node {address} cannot remove itself; to take it out, ask it to leave"
            )
        state = membership.ring
        in_ring = state is not None and any(
            address in layout.members for layout in (state.current, state.pending) if layout
        )
        record = membership.members.get(address)
        if record is None and not in_ring:
            raise ClusterRefused(f"{address} is not a member of this cluster")
        if record is None:
            # A removal must be newer than every record of it anywhere: without one to
            # outdo, peers' records would undo it.
            raise ClusterRefused(
                f"node {self.address} has not heard of {address} since it started;"
                " ask a node that has (see kvstore status)"
            )
        if record is not None and record.status is MemberStatus.LEFT:
            return  # asked twice, or it had left already
        if membership.is_up(address, self.clock()):
            raise ClusterRefused(
                f"{address} is up (as node {self.address} sees it): ask it to leave instead"
                f" (kvstore leave --node {address}), which hands its data off first"
            )
        staying = [
            a
            for a in ring.members
            if a != address
            and (
                a not in membership.members
                or membership.members[a].status
                in (MemberStatus.ACTIVE, MemberStatus.JOINING, MemberStatus.STANDBY)
            )
        ]
        if not staying:
            raise ClusterRefused(f"removing {address} would leave the ring with no member")
        membership.remove(address)
        log.warning("removed %s from the cluster (asked by an operator)", address)

    def status(self, handoffs_pending: int) -> pb.StatusResponse:
        now = self.clock()
        membership = self.membership
        ring, pending = self.ring, self.pending_ring
        owned = Counter(ring.owner(p) for p in range(ring.partitions)) if ring else Counter()
        future = (
            Counter(pending.owner(p) for p in range(pending.partitions)) if pending else Counter()
        )
        known = set(membership.members)
        for layout in (ring, pending):
            if layout is not None:
                known.update(layout.members)
        members = []
        for address in sorted(known):
            record = membership.members.get(address)
            members.append(
                pb.MemberReport(
                    address=address,
                    # A ring member not heard from since this node started has no record.
                    node_id=record.node_id if record else "",
                    status=record.status.value if record else "unknown",
                    up=membership.is_up(address, now),
                    phi=0.0 if address == self.address else membership.detector.phi(address, now),
                    partitions_owned=owned[address],
                    partitions_pending=future[address],
                )
            )
        state = membership.ring
        return pb.StatusResponse(
            address=self.address,
            node_id=self.config.node_id,
            ring_epoch=state.epoch if state else 0,
            ring_pending=pending is not None,
            members=members,
            hints_pending=self.storage.hint_count,
            hint_bytes=self.storage.hint_bytes,
            handoffs_pending=handoffs_pending,
            counters=dict(self.counters),
        )

    # ---- replica side ----

    def local_get(self, key: bytes) -> KeyState | None:
        """What this node's data holds for the key (hints left out)."""
        self.limits.check_key(key)
        return self.storage.get(key)

    def gc_read(self, key: bytes) -> KeyState | None:
        """Tombstone GC's read: the data (no hints), a tombstone purged here lately
        included, so a purge that ran ahead on this replica can be completed."""
        self.limits.check_key(key)
        return self.storage.held(key)

    def replica_read(self, key: bytes) -> KeyState | None:
        """This node's answer as a replica: its data merged with hints it keeps for others,
        so a fallback standing in for a primary answers what it was given."""
        self.limits.check_key(key)
        state = self.storage.get(key)
        hints = self.storage.hints_for_key(key)
        if not hints:
            return state
        return versions.merge_all([state or EMPTY, *hints])

    def replica_merge(self, key: bytes, state: KeyState, hint_for: str = "") -> None:
        self.limits.check_key(key)
        if hint_for and hint_for != self.address:
            self.storage.store_hint(
                hint_for, key, state, time.time_ns() // 1_000_000, self.background.hint_max_bytes
            )
            self.counters["hints_stored"] += 1
        else:
            self.storage.merge(key, state)

    def replica_merge_batch(self, items: list[tuple[bytes, KeyState]]) -> None:
        for key, _ in items:
            self.limits.check_key(key)
        self.storage.merge_many(items)

    # ---- coordination ----

    def _replicas(self, key: bytes, strict: bool) -> tuple[list[str], list[str], set[str]]:
        """The key's primaries, the fallbacks that may stand in for them (none when strict),
        and those of both the failure detector holds down."""
        ring = self.require_ring()
        preference = ring.preference_list(key)
        primaries = [e.member for e in preference if e.primary]
        fallbacks = [] if strict else [e.member for e in preference if not e.primary]
        now = self.clock()
        down = {m for m in primaries + fallbacks if not self.membership.is_up(m, now)}
        return primaries, fallbacks, down

    async def get(self, key: bytes, r: int, timeout_ms: int, strict: bool = False) -> KeyState:
        self.limits.check_key(key)
        required = self.config.quorum.read_quorum(r)
        deadline = self._deadline(timeout_ms)
        primaries, fallbacks, down = self._replicas(key, strict)
        fsm = GetCoordinator(primaries, required, fallbacks, down)
        decided = asyncio.get_running_loop().create_future()
        self._spawn(self._collect_reads(fsm, key, deadline, decided))
        await asyncio.shield(decided)
        if fsm.outcome is not Outcome.SUCCEEDED:
            raise fsm.unavailable(_why(fsm.outcome))
        return fsm.result()

    async def _collect_reads(
        self, fsm: GetCoordinator, key: bytes, deadline: float, decided: asyncio.Future[None]
    ) -> None:
        """Read until every contacted replica answered or the deadline, answering the client
        as soon as the quorum decides; then repair the replicas that were behind."""
        calls = _Calls(decided)
        for action in fsm.start():
            calls.add(action.target, self._read(action.target, key, deadline))
        try:
            while calls.pending and not fsm.settled:
                calls.decide_if(fsm.outcome)
                for target, result, error in await calls.next(deadline):
                    if error is None:
                        fsm.on_reply(target, result)
                    else:
                        fsm.on_failure(target, error)
                for action in fsm.take_actions():
                    calls.add(action.target, self._read(action.target, key, deadline))
                if asyncio.get_running_loop().time() >= deadline:
                    break
        finally:
            calls.close()
        if len(fsm.replies) > 1:
            await self._read_repair(key, fsm)

    async def _read_repair(self, key: bytes, fsm: GetCoordinator) -> None:
        merged = fsm.result()
        stale = fsm.stale_targets(merged)
        timeout = self.limits.request_timeout_ms / 1000
        for target in stale:
            try:
                if target == self.address:
                    self.storage.merge(key, merged)
                else:
                    await self.peers.merge(target, key, merged, timeout)
                self.counters["read_repairs"] += 1
            except (PeerFailure, KvError) as exc:
                log.info("read repair of a key on %s failed: %s", target, exc)

    async def put(self, request: pb.PutRequest, hops: int = 0) -> pb.PutResponse:
        """Coordinate a put or delete (`request.tombstone`). The answer's context is exact:
        the context sent plus the new write, never a concurrent sibling the writer was not
        shown; with `return_body`, the siblings after the write and a context covering them."""
        key = request.key
        self.limits.check_key(key)
        if not request.tombstone:
            self.limits.check_value(request.value)
        context = decode_context(request.context, key)
        required = self.config.quorum.write_quorum(request.w)
        deadline = self._deadline(request.timeout_ms)
        primaries, fallbacks, down = self._replicas(key, request.strict)
        if self.address not in primaries:
            return await self._forward(request, primaries, down, hops, deadline)

        value = None if request.tombstone else request.value
        max_siblings = self.limits.max_siblings
        made: list[versions.Dot] = []

        def apply(current: KeyState | None) -> KeyState:
            before = current or EMPTY
            new, dot = versions.write(
                before, context, self.actor, value, time.time_ns() // 1_000_000
            )
            if len(new.siblings) > max_siblings:
                raise TooManySiblings(
                    f"the write would leave {len(new.siblings)} concurrent versions; the limit"
                    f" is {max_siblings}: read the key and write with its context to resolve them"
                )
            self.limits.check_clock_growth(before, new, self.actor)
            if dot.counter > MAX_RECORD_COUNTER:
                raise StorageError(f"the key's write counter for {self.actor} is exhausted")
            made.append(dot)
            return new

        fsm = PutCoordinator(self.address, primaries, required, fallbacks, down)
        applied = self.storage.update(key, apply)
        decided = asyncio.get_running_loop().create_future()
        self._spawn(self._replicate(fsm, fsm.start(applied), key, deadline, decided))
        if self.pending_ring is not None:
            # Partitions are moving: the pending owners get every write too, so the data
            # they pulled stays complete until the move is committed. Not counted in w.
            for target in self.pending_ring.primaries(key):
                if target not in primaries:
                    self._spawn(self._copy(target, key, applied, deadline))
        await asyncio.shield(decided)
        if fsm.outcome is not Outcome.SUCCEEDED:
            raise fsm.unavailable(
                _why(fsm.outcome) + " (the write may be present on some replicas)"
            )
        if request.return_body:
            return pb.PutResponse(
                context=encode_context(applied.clock, key), values=applied.live_values
            )
        return pb.PutResponse(context=encode_context(versions.put_context(applied, made[0]), key))

    async def _replicate(
        self,
        fsm: PutCoordinator,
        first: list[MergeReplica],
        key: bytes,
        deadline: float,
        decided: asyncio.Future[None],
    ) -> None:
        """Ship the write until every primary's place is taken (by it or a stand-in) or the
        deadline, answering the client as soon as w replicas acknowledged. A primary silent
        for replica_timeout_ms gets a stand-in that keeps a hint for it."""
        loop = asyncio.get_running_loop()
        calls = _Calls(decided)

        def launch(actions: list[MergeReplica]) -> None:
            for a in actions:
                call = self.peers.merge(a.target, key, a.state, _remaining(deadline), a.hint_for)
                calls.add(a.target, call)

        launch(first)
        slow_at = loop.time() + self.background.replica_timeout_ms / 1000
        try:
            while calls.pending and not fsm.settled:
                calls.decide_if(fsm.outcome)
                wake = min(slow_at, deadline) if slow_at else deadline
                for target, _result, error in await calls.next(wake):
                    if error is None:
                        fsm.on_ack(target)
                    else:
                        fsm.on_failure(target, error)
                if slow_at and loop.time() >= slow_at:
                    slow_at = 0.0
                    for target in fsm.targets:
                        fsm.on_slow(target)
                launch(fsm.take_actions())
                if loop.time() >= deadline:
                    break
        finally:
            calls.close()

    async def _copy(self, target: str, key: bytes, state: KeyState, deadline: float) -> None:
        try:
            await self.peers.merge(target, key, state, _remaining(deadline))
        except (PeerFailure, KvError) as exc:
            log.info("copy of a write to pending owner %s failed: %s", target, exc)

    async def _read(self, target: str, key: bytes, deadline: float) -> KeyState | None:
        if target == self.address:
            return self.replica_read(key)
        return await self.peers.read(target, key, _remaining(deadline))

    async def _forward(
        self,
        request: pb.PutRequest,
        primaries: list[str],
        down: set[str],
        hops: int,
        deadline: float,
    ) -> pb.PutResponse:
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
        order = sorted(primaries, key=lambda p: p in down)
        for target in order:
            try:
                forward = pb.ForwardPutRequest(
                    request=request, hops=hops + 1, ring_epoch=self.ring_epoch, sender=self.address
                )
                return await self.peers.forward_put(target, forward, _remaining(deadline))
            except grpc.aio.AioRpcError as exc:
                if not is_transport_failure(exc):
                    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise Unavailable(
                            f"put forwarded to {target}: no answer in time (the write may be"
                            " present on some replicas)"
                        ) from exc
                    raise error_from_rpc(exc, target) from exc
                tried.append(f"{target} (unreachable)")
        raise Unavailable(f"put: no replica of the key could be reached (tried {', '.join(tried)})")

    def _deadline(self, timeout_ms: int) -> float:
        return asyncio.get_running_loop().time() + self.limits.timeout_ms(timeout_ms) / 1000

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background request work failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


class _Calls:
    """Replica calls of one request in flight, and the future that answers its client."""

    def __init__(self, decided: asyncio.Future[None]) -> None:
        self._tasks: dict[asyncio.Future[Any], str] = {}
        self._decided = decided

    @property
    def pending(self) -> bool:
        return bool(self._tasks)

    def add(self, target: str, call: Awaitable[Any]) -> None:
        self._tasks[asyncio.ensure_future(call)] = target

    def decide_if(self, outcome: Outcome) -> None:
        if outcome is not Outcome.PENDING and not self._decided.done():
            self._decided.set_result(None)

    async def next(self, until: float) -> list[tuple[str, Any, str | None]]:
        """The calls that end before `until` (loop time): (target, result, error or None)."""
        timeout = max(until - asyncio.get_running_loop().time(), 0)
        done, _ = await asyncio.wait(
            self._tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ended: list[tuple[str, Any, str | None]] = []
        for task in done:
            target = self._tasks.pop(task)
            exc = task.exception()
            if exc is None:
                ended.append((target, task.result(), None))
            elif isinstance(exc, PeerFailure | KvError):
                ended.append((target, None, str(exc)))
            else:
                log.error("replica call to %s failed unexpectedly", target, exc_info=exc)
                ended.append((target, None, f"{type(exc).__name__}: {exc}"))
        return ended

    def close(self) -> None:
        """The request is over: answer the client if not yet, stop the calls left."""
        if not self._decided.done():
            self._decided.set_result(None)
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()


def _remaining(deadline: float) -> float:
    return max(deadline - asyncio.get_running_loop().time(), 0.001)


def _why(outcome: Outcome) -> str:
    return "deadline reached" if outcome is Outcome.PENDING else "too many replicas failed"

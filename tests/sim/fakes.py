"""An in-process cluster for the request path: the real roles (Router, Replica, Coordinator,
built by the real composition root over real RocksDB storage) on a fake transport and a fake
clock. No sockets, no threads, no real waiting: time moves only when every task is blocked,
straight to the next timer, so a run is deterministic and takes milliseconds. The seed of
the deterministic simulator.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kvstore.config import Background, NodeConfig
from kvstore.core.cluster import ClusterView, RingState
from kvstore.core.failure import PhiAccrualDetector
from kvstore.core.limits import Limits, Quorum
from kvstore.core.membership import Membership
from kvstore.core.requests import ForwardedPut, PutAnswer
from kvstore.core.ring import Ring, initial_layout
from kvstore.core.transport import PeerFailure, PeerUnreachable, RecordPage
from kvstore.core.versions import KeyState
from kvstore.errors import KvError
from kvstore.node.server import NodeParts, build_node
from kvstore.storage.codec import decode_record
from kvstore.storage.engine import Storage

T = TypeVar("T")

# Rounds of the event loop that count as "every task is blocked": ready callbacks chain a
# few deep at most here (a reply wakes a driver loop, which wakes the client).
_SETTLE_ROUNDS = 50


class FakeClock:
    """Monotonic and wall time that move only when told (or when the simulation is idle)."""

    def __init__(self, start: float = 1_000.0, wall_ms: int = 1_800_000_000_000) -> None:
        self._start = start
        self._now = start
        self._wall_start_ms = wall_ms
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall_ms(self) -> int:
        return self._wall_start_ms + round((self._now - self._start) * 1000)

    @property
    def elapsed(self) -> float:
        return self._now - self._start

    def _timer(self, at: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if at <= self._now:
            future.set_result(None)
        else:
            heapq.heappush(self._timers, (at, next(self._seq), future))
        return future

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(self._now + seconds)
        try:
            await timer
        finally:
            timer.cancel()

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.Future[None]:
        timer = self._timer(when)
        timer.add_done_callback(lambda fired: None if fired.cancelled() else callback())
        return timer

    def advance(self) -> bool:
        """Jump to the next live timer and fire every timer due then; False if none is left."""
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)  # cancelled: its waiter went away
        if not self._timers:
            return False
        self._now = max(self._now, self._timers[0][0])
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.done():
                timer.set_result(None)
        return True


async def settle() -> None:
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)


def _describe_tasks() -> str:
    lines = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        frames = task.get_stack()
        where = frames[-1] if frames else None
        at = f"{where.f_code.co_filename}:{where.f_lineno}" if where else "?"
        lines.append(f"  {task.get_coro()!r} at {at}")
    return "\n".join(lines)


def simulate(clock: FakeClock, scenario: Callable[[], Awaitable[T]], max_steps: int = 10_000) -> T:
    """Run `scenario` on a new event loop, moving the clock to the next timer whenever every
    task is blocked. Fails on a deadlock (blocked, no timer left) or a runaway scenario."""

    async def main() -> T:
        task = asyncio.ensure_future(scenario())
        for _ in range(max_steps):
            await settle()
            if task.done():
                return task.result()
            if not clock.advance():
                blocked = _describe_tasks()
                task.cancel()
                raise AssertionError(
                    f"deadlock: every task is blocked and no timer is set:\n{blocked}"
                )
        task.cancel()
        raise AssertionError(f"the scenario did not finish in {max_steps} clock steps")

    return asyncio.run(main())


@dataclass(frozen=True)
class Sent:
    source: str
    target: str
    method: str
    key: bytes
    record: bytes = b""
    hint_for: str = ""


@dataclass
class FakeNetwork:
    """Who can reach whom, and how fast. A target in `refusing` refuses connections (the
    request is never sent); one in `paused` takes requests and never answers (a SIGSTOPped
    process: the call fails with DEADLINE_EXCEEDED at its timeout); `latency` delays delivery,
    `reply_delay` the answer after the target acted (past any timeout).
    Every message sent is logged in order."""

    clock: FakeClock
    nodes: dict[str, NodeParts] = field(default_factory=dict)
    refusing: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    latency: dict[str, float] = field(default_factory=dict)
    reply_delay: dict[str, float] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    default_latency: float = 0.001

    def messages(self, method: str | None = None) -> list[Sent]:
        return [m for m in self.sent if method is None or m.method == method]

    async def deliver(
        self, message: Sent, timeout: float, act: Callable[[NodeParts], Awaitable[T] | T]
    ) -> T:
        self.sent.append(message)
        target = message.target
        if target in self.refusing or target not in self.nodes:
            raise PeerUnreachable(f"{target}: connection refused")
        latency = self.latency.get(target, self.default_latency)
        if target in self.paused or latency >= timeout:
            await self.clock.sleep(timeout)
            raise PeerFailure("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
        await self.clock.sleep(latency)
        result = act(self.nodes[target])
        if isinstance(result, Awaitable):
            result = await result
        # A late reply is not cut off here: it is the coordinator's deadline that must
        # leave it unseen.
        await self.clock.sleep(self.reply_delay.get(target, 0.0))
        return result  # type: ignore[return-value]


def _as_peer_failure(call: Callable[[], T]) -> T:
    """A replica's refusal crosses the wire as a status, as over gRPC."""
    try:
        return call()
    except KvError as exc:
        raise PeerFailure(f"{exc.code}: {exc}", exc.code) from exc


class FakeTransport:
    """One node's PeerTransport over the FakeNetwork: each message reaches the target's real
    role (its Replica, or its Coordinator for a forwarded put)."""

    def __init__(self, network: FakeNetwork, source: str) -> None:
        self._network = network
        self._source = source

    def _sent(self, target: str, method: str, key: bytes, **extra: Any) -> Sent:
        return Sent(self._source, target, method, key, **extra)

    async def read(
        self, address: str, key: bytes, timeout: float, data_only: bool = False
    ) -> KeyState | None:
        return await self._network.deliver(
            self._sent(address, "read", key),
            timeout,
            lambda node: _as_peer_failure(lambda: node.replica.read(key, data_only=data_only)),
        )

    async def merge(
        self, address: str, key: bytes, record: bytes, timeout: float, hint_for: str = ""
    ) -> None:
        state = decode_record(record)
        await self._network.deliver(
            self._sent(address, "merge", key, record=record, hint_for=hint_for),
            timeout,
            lambda node: _as_peer_failure(lambda: node.replica.merge(key, state, hint_for)),
        )

    async def merge_batch(
        self, address: str, items: Iterable[tuple[bytes, KeyState]], timeout: float
    ) -> None:
        batch = list(items)
        await self._network.deliver(
            self._sent(address, "merge_batch", b""),
            timeout,
            lambda node: _as_peer_failure(lambda: node.replica.merge_batch(batch)),
        )

    async def forward_put(self, address: str, forward: ForwardedPut, timeout: float) -> PutAnswer:
        return await self._network.deliver(
            self._sent(address, "forward_put", forward.command.key),
            timeout,
            lambda node: node.coordinator.forwarded_put(forward),
        )

    def retain(self, addresses: Collection[str]) -> None:
        pass  # the fake network holds nothing open

    # The background exchanges are not part of the request path: a test that reaches one
    # has left what this fake models.
    async def gossip(
        self, address: str, sender: str, view: ClusterView, timeout: float
    ) -> ClusterView:
        raise NotImplementedError("gossip is not simulated yet")

    async def tree_hashes(
        self, address: str, partition: int, level: int, indices: Sequence[int], timeout: float
    ) -> list[bytes]:
        raise NotImplementedError("anti-entropy is not simulated yet")

    async def segment_records(
        self, address: str, partition: int, segments: Sequence[int], after: bytes, timeout: float
    ) -> RecordPage:
        raise NotImplementedError("anti-entropy is not simulated yet")

    async def partition_records(
        self, address: str, partition: int, after: bytes, limit: int, timeout: float
    ) -> RecordPage:
        raise NotImplementedError("ownership handoff is not simulated yet")

    async def purge(self, address: str, key: bytes, state: KeyState, timeout: float) -> bool:
        raise NotImplementedError("tombstone GC is not simulated yet")

    async def close(self) -> None:
        pass


class HeldDownMembership(Membership):
    """The real membership, its failure detector replaced by a set: no heartbeats flow
    here (gossip is not simulated yet), so the members up are those not held down."""

    held_down: set[str]

    def is_up(self, address: str, now: float) -> bool:
        return address == self.address or address not in self.held_down


@dataclass
class SimCluster:
    clock: FakeClock
    network: FakeNetwork
    nodes: dict[str, NodeParts]
    storages: dict[str, Storage]
    held_down: set[str]
    ring: Ring

    def node(self, address: str) -> NodeParts:
        return self.nodes[address]

    def move_partitions(self, current: Sequence[str], pending: Sequence[str]) -> None:
        """Every node routes by a ring of `current` while partitions move to a ring of
        `pending` (as gossip would tell them mid-join), and its router follows."""
        first = next(iter(self.nodes.values()))
        partitions, n = first.membership.partitions, first.membership.n
        state = RingState(
            epoch=2,
            current=initial_layout(sorted(current), partitions, n),
            pending=initial_layout(sorted(pending), partitions, n),
        )
        for node in self.nodes.values():
            node.membership.ring = state
            node.router.refresh()
        self.ring = first.router.require_ring()

    def key_where(self, predicate: Callable[[list[str]], bool]) -> bytes:
        """A key whose preference list (primaries first) satisfies `predicate`."""
        for i in range(10_000):
            key = f"key-{i}".encode()
            if predicate([e.member for e in self.ring.preference_list(key)]):
                return key
        raise AssertionError("no key with such a preference list")

    def primaries(self, key: bytes) -> list[str]:
        return self.ring.primaries(key)

    def fallbacks(self, key: bytes) -> list[str]:
        return [e.member for e in self.ring.preference_list(key) if not e.primary]

    def stored(self, address: str, key: bytes) -> KeyState | None:
        return self.storages[address].get(key)

    def hinted(self, address: str) -> list[tuple[str, bytes]]:
        return [(h.target, h.key) for h in self.storages[address].hints()]

    async def drain(self) -> None:
        """Let the work requests left running (replication, repair) finish. (Blocking, never
        polling: the simulation moves time only when every task is blocked.)"""
        while any(len(node.tasks) for node in self.nodes.values()):
            for node in self.nodes.values():
                await node.tasks.join()

    def close(self) -> None:
        for storage in self.storages.values():
            storage.close()


def make_cluster(
    tmp_path: Path,
    members: int = 4,
    n: int = 3,
    r: int = 2,
    w: int = 2,
    partitions: int = 8,
    request_timeout_ms: int = 2_000,
    replica_timeout_ms: int = 500,
) -> SimCluster:
    clock = FakeClock()
    network = FakeNetwork(clock)
    addresses = tuple(f"10.0.0.{i + 1}:7000" for i in range(members))
    held_down: set[str] = set()
    nodes: dict[str, NodeParts] = {}
    storages: dict[str, Storage] = {}
    for i, address in enumerate(addresses):
        config = NodeConfig(
            node_id=f"n{i + 1}",
            listen=address,
            advertise=address,
            data_dir=str(tmp_path / f"n{i + 1}"),
            seeds=addresses,
            partitions=partitions,
            quorum=Quorum(n=n, r=r, w=w),
            limits=Limits(request_timeout_ms=request_timeout_ms),
            background=Background(replica_timeout_ms=replica_timeout_ms),
        )
        storage = storages[address] = Storage(config.data_dir)
        actor = storage.claim_identity(config.node_id)
        membership = HeldDownMembership(
            address=address,
            node_id=config.node_id,
            incarnation=clock.wall_ms(),
            partitions=partitions,
            n=n,
            seeds=addresses,
            detector=PhiAccrualDetector(threshold=8),
            now=clock.monotonic(),
            bootstrap=True,
        )
        membership.held_down = held_down
        transport = FakeTransport(network, address)
        nodes[address] = build_node(config, storage, actor, transport, membership, clock)
    network.nodes = nodes
    ring = nodes[addresses[0]].router.require_ring()
    return SimCluster(clock, network, nodes, storages, held_down, ring)

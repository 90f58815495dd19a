"""The node: composition of config, storage, ring, peer transport and the sans-IO coordinators.

This is where time and I/O meet the pure core: it picks the replicas, starts the replica calls
as tasks, feeds their results to a coordinator and stops at its outcome or the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.config import NodeConfig
from kvstore.core import versions
from kvstore.core.coordinator import GetCoordinator, Outcome, PutCoordinator
from kvstore.core.ring import Ring
from kvstore.core.versions import EMPTY, KeyState
from kvstore.errors import KvError, TooManySiblings, Unavailable
from kvstore.rpc.peer import PeerClient, PeerFailure
from kvstore.rpc.status import error_from_rpc, is_transport_failure
from kvstore.storage.codec import decode_context, encode_context
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

# A write reaching a non-replica is forwarded once; a second hop means the rings disagree.
MAX_FORWARD_HOPS = 1
R = TypeVar("R")


class Node:
    def __init__(self, config: NodeConfig, storage: Storage, actor: str, peers: PeerClient):
        self.config = config
        self.storage = storage
        self.actor = actor
        self.peers = peers
        self.address = config.advertise
        self.ring = Ring(config.members, config.partitions, config.quorum.n)
        self.limits = config.limits
        # Replication calls still running after the client was answered (W < N).
        self._background: set[asyncio.Task[None]] = set()

    def info(self) -> pb.NodeInfoResponse:
        return pb.NodeInfoResponse(
            node_id=self.config.node_id,
            actor=self.actor,
            address=self.address,
            members=list(self.ring.members),
            partitions=self.ring.partitions,
            n=self.ring.n,
        )

    async def check_peers(self, attempts: int = 60, interval: float = 1.0) -> list[str]:
        """Ask every peer for its ring until each has answered (bounded); log and return the
        disagreements. Static membership has no other guard against a mistyped --seeds."""
        mine = self.info()
        waiting = [m for m in self.ring.members if m != self.address]
        problems: list[str] = []
        for _ in range(attempts):
            for peer in list(waiting):
                try:
                    theirs = await self.peers.node_info(peer, timeout=interval)
                except grpc.aio.AioRpcError:
                    continue
                waiting.remove(peer)
                for field in ("members", "partitions", "n"):
                    if list_or_value(theirs, field) != list_or_value(mine, field):
                        problem = (
                            f"peer {peer} has {field}={list_or_value(theirs, field)}, this node"
                            f" {list_or_value(mine, field)}: the nodes place keys differently;"
                            " give every node the same --seeds, --partitions and --n"
                        )
                        log.error("%s", problem)
                        problems.append(problem)
            if not waiting:
                if not problems:
                    log.info("ring agreed with all %d peers", len(self.ring.members) - 1)
                break
            await asyncio.sleep(interval)
        return problems

    # ---- replica side ----

    def local_get(self, key: bytes) -> KeyState | None:
        self.limits.check_key(key)
        return self.storage.get(key)

    def replica_merge(self, key: bytes, state: KeyState) -> None:
        self.limits.check_key(key)
        self.storage.merge(key, state)

    # ---- coordination ----

    async def get(self, key: bytes, r: int, timeout_ms: int) -> KeyState:
        self.limits.check_key(key)
        required = self.config.quorum.read_quorum(r)
        deadline = self._deadline(timeout_ms)
        fsm = GetCoordinator(self.ring.primaries(key), required)
        calls = {a.target: self._read(a.target, key, deadline) for a in fsm.start()}

        def on_result(target: str, result: KeyState | None) -> Outcome:
            return fsm.on_reply(target, result)

        await _drive(calls, deadline, on_result, fsm.on_failure, lambda: fsm.outcome, keep=False)
        if fsm.outcome is not Outcome.SUCCEEDED:
            raise fsm.unavailable(_why(fsm.outcome))
        return fsm.result()

    async def put(self, request: pb.PutRequest, hops: int) -> bytes:
        """Coordinate a put or delete (`request.tombstone`); returns the new context."""
        key = request.key
        self.limits.check_key(key)
        if not request.tombstone:
            self.limits.check_value(request.value)
        context = decode_context(request.context, key)
        required = self.config.quorum.write_quorum(request.w)
        deadline = self._deadline(request.timeout_ms)
        targets = self.ring.primaries(key)
        if self.address not in targets:
            return await self._forward(request, targets, hops, deadline)

        value = None if request.tombstone else request.value
        max_siblings = self.limits.max_siblings

        def apply(current: KeyState | None) -> KeyState:
            new, _dot = versions.write(
                current or EMPTY, context, self.actor, value, time.time_ns() // 1_000_000
            )
            if len(new.siblings) > max_siblings:
                raise TooManySiblings(
                    f"the write would leave {len(new.siblings)} concurrent versions; the limit"
                    f" is {max_siblings}: read the key and write with its context to resolve them"
                )
            return new

        fsm = PutCoordinator(self.address, targets, required)
        applied = self.storage.update(key, apply)
        calls = {
            a.target: self.peers.merge(a.target, key, a.state, _remaining(deadline))
            for a in fsm.start(applied)
        }

        def on_result(target: str, _result: None) -> Outcome:
            return fsm.on_ack(target)

        await _drive(
            calls,
            deadline,
            on_result,
            fsm.on_failure,
            lambda: fsm.outcome,
            keep=True,
            background=self._background,
        )
        if fsm.outcome is not Outcome.SUCCEEDED:
            raise fsm.unavailable(
                _why(fsm.outcome) + " (the write may be present on some replicas)"
            )
        return encode_context(applied.vector, key)

    async def _read(self, target: str, key: bytes, deadline: float) -> KeyState | None:
        if target == self.address:
            return self.storage.get(key)
        return await self.peers.read(target, key, _remaining(deadline))

    async def _forward(
        self, request: pb.PutRequest, targets: list[str], hops: int, deadline: float
    ) -> bytes:
        """Hand the write to a replica of the key: only replicas create dots."""
        if hops >= MAX_FORWARD_HOPS:
            raise Unavailable(f"put forwarded to {self.address}, which is not a replica of the key")
        tried: list[str] = []
        for target in targets:
            try:
                response = await self.peers.forward_put(
                    target, request, hops + 1, _remaining(deadline)
                )
                return response.context
            except grpc.aio.AioRpcError as exc:
                if not is_transport_failure(exc):
                    raise error_from_rpc(exc, target) from exc
                tried.append(target)
        raise Unavailable(f"put: no replica of the key could be reached (tried {', '.join(tried)})")

    def _deadline(self, timeout_ms: int) -> float:
        return asyncio.get_running_loop().time() + self.limits.timeout_ms(timeout_ms) / 1000

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def list_or_value(info: pb.NodeInfoResponse, field: str) -> object:
    value = getattr(info, field)
    return sorted(value) if field == "members" else value


def _remaining(deadline: float) -> float:
    return max(deadline - asyncio.get_running_loop().time(), 0.001)


def _why(outcome: Outcome) -> str:
    return "deadline reached" if outcome is Outcome.PENDING else "too many replicas failed"


async def _drive(
    calls: Mapping[str, Awaitable[R]],
    deadline: float,
    on_result: Callable[[str, R], Outcome],
    on_failure: Callable[[str, str], Outcome],
    outcome: Callable[[], Outcome],
    *,
    keep: bool,
    background: set[asyncio.Task[None]] | None = None,
) -> None:
    """Run replica calls until the coordinator decides or the deadline passes.

    Calls still running at that point are cancelled, or with `keep` left to finish in the
    background (replication to the replicas beyond the write quorum), bounded by the deadline.
    """
    tasks: dict[asyncio.Future[R], str] = {
        asyncio.ensure_future(call): target for target, call in calls.items()
    }
    loop = asyncio.get_running_loop()
    while tasks and outcome() is Outcome.PENDING:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        done, _ = await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            target = tasks.pop(task)
            exc = task.exception()
            if exc is None:
                on_result(target, task.result())
            elif isinstance(exc, PeerFailure | KvError):
                on_failure(target, str(exc))
            else:
                log.error("replica call to %s failed unexpectedly", target, exc_info=exc)
                on_failure(target, f"{type(exc).__name__}: {exc}")
    for task in tasks:
        if keep and background is not None:
            watcher = asyncio.ensure_future(_finish_quietly(task, tasks[task]))
            background.add(watcher)
            watcher.add_done_callback(background.discard)
        else:
            task.cancel()


async def _finish_quietly(task: asyncio.Future[Any], target: str) -> None:
    try:
        await task
    except (PeerFailure, KvError) as exc:
        log.info("background replication to %s failed: %s", target, exc)

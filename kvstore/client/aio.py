"""The asyncio client: every call of every task rides one long-lived stream per node
(kvstore.v1.KV/Stream), the calls ready in one turn of the event loop in one message. Calls
go to a primary of their key by the ring the client learns (KV.Topology); a slow call is
hedged on the next node, a failed one retried (kvstore.client._calls), and a node that
fails or stalls is skipped while its circuit breaker is open."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client._calls import ClientStats, HedgeBudget, Tries
from kvstore.client._common import (
    CHANNEL_OPTIONS,
    DEADLINE_SLACK_S,
    MAX_MESSAGE_BYTES,
    DeleteLike,
    Key,
    PutLike,
    RequestBuilder,
    Resolver,
    failure,
    get_call,
    get_many_call,
    key_bytes,
    put_call,
    put_many_call,
)
from kvstore.client.credentials import TLS, channel_credentials, open_channel
from kvstore.client.latency import LatencyWindow
from kvstore.client.policy import BreakerPolicy, HedgePolicy, RetryPolicy
from kvstore.client.results import GetItem, GetResult, PutResult, PutResultItem
from kvstore.client.routing import NodeSelector, table_from
from kvstore.errors import InvalidOption, KvError, TransportError
from kvstore.rpc.channels import ChannelPool
from kvstore.rpc.streams import CallStream, stream_to

log = logging.getLogger(__name__)

T = TypeVar("T")

_STREAM = "/kvstore.v1.KV/Stream"
# The bytes of calls to one node that may be queued or unanswered at once; past it a call
# waits (within its timeout) for room.
CLIENT_INFLIGHT_BYTES = 64 * 1024 * 1024
# How often the ring is asked for again (and how long the first ask may take, within the
# call's timeout); a call that finds no node reachable asks at once.
TOPOLOGY_REFRESH_S = 30.0
TOPOLOGY_TIMEOUT_S = 2.0
# How soon to ask again when no answer came, or it did not name every ring member's client
# address (right after a cluster starts: until then calls may land on nodes that are not
# their key's replicas, which forward them, and a forward cannot be hedged); and how many
# nodes one ask tries.
TOPOLOGY_RETRY_S = 0.25
TOPOLOGY_CANDIDATES = 8
# How long a probe of a node held suspect waits for its health answer.
PROBE_TIMEOUT_S = 1.0


class AsyncClient:
    """Talks to a cluster: each call goes to a primary of its key, a slow one is hedged, a
    failed one retried on another node.

    async with AsyncClient("127.0.0.1:8101,127.0.0.1:8102") as kv:
        await kv.put("k", b"v")
        result = await kv.get("k", timeout=0.5)
        items = await kv.get_many(["a", "b"])   # GetResult, or the key's error
    """

    def __init__(
        self,
        seeds: str | Sequence[str],
        timeout: float = 5.0,
        resolver: Resolver | None = None,
        max_inflight_bytes: int = CLIENT_INFLIGHT_BYTES,
        tls: TLS | str | bool | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        hedge: HedgePolicy | None = None,
        breaker: BreakerPolicy | None = None,
        route_by_ring: bool = True,
        topology_refresh_s: float = TOPOLOGY_REFRESH_S,
    ) -> None:
        """`seeds`: client addresses (HOST:PORT) of some nodes: the client learns the others
        from them. `timeout`: each call's budget (a call's own `timeout=` overrides it), its
        retries and hedges included. `tls`: the cluster CA's PEM file (or a TLS with a
        client certificate too; None: from KVSTORE_TLS_* if set, False: plaintext);
        `token`: a bearer token for the client port (needs `tls`; None: KVSTORE_TOKEN if
        set). `retry`, `hedge`, `breaker`: the policies (defaults: RetryPolicy(),
        HedgePolicy(), BreakerPolicy()). `route_by_ring=False`: no topology, calls rotate
        over the seeds."""
        self._requests = RequestBuilder(seeds, timeout, resolver)
        if not isinstance(topology_refresh_s, int | float) or topology_refresh_s <= 0:
            raise InvalidOption(f"topology_refresh_s must be > 0, got {topology_refresh_s!r}")
        credentials = channel_credentials(tls, token)
        self._pool = ChannelPool(
            lambda address: open_channel(address, credentials, CHANNEL_OPTIONS, aio=True),
            pb_grpc.KVStub,
        )
        self._streams: dict[str, CallStream[pb.ClientResult]] = {}
        self._max_inflight_bytes = max_inflight_bytes
        self._retry = retry or RetryPolicy()
        self._hedge = hedge or HedgePolicy()
        self._hedge_budget = HedgeBudget(self._hedge.max_share, self._hedge.max_burst)
        self._rng = random.Random()
        self._nodes = NodeSelector(self._requests.addresses, breaker or BreakerPolicy(), self._rng)
        self._route_by_ring = route_by_ring
        self._refresh_s = float(topology_refresh_s)
        self._topology_due = 0.0  # loop time of the next ask; 0: never asked
        self._topology_task: asyncio.Task[None] | None = None
        self._read_latency = LatencyWindow()
        self._write_latency = LatencyWindow()
        # reads? -> (the latency window's version, or -1 - its length while it has fewer
        # than min_samples; the hedge delay then). The start matches no version.
        unknown = (-(1 << 62), None)
        self._hedge_delays: dict[bool, tuple[int, float | None]] = {True: unknown, False: unknown}
        self._stats = ClientStats()
        self._alive_checks: dict[str, asyncio.Future[bool]] = {}  # node -> health check out
        self._closed = False
        self._probes: set[asyncio.Task[None]] = set()

    def stream(self, address: str) -> CallStream[pb.ClientResult]:
        """The stream of calls to the node at `address` (opened on first use)."""
        stream = self._streams.get(address)
        if stream is None:
            self._pool.stub(address)
            stream = self._streams[address] = stream_to(
                f"node {address}",
                self._pool.channels[address],
                _STREAM,
                pb.ClientResults,
                # A node that cannot be reached fails the call at once: the next is tried.
                wait_for_ready=False,
                max_inflight_bytes=self._max_inflight_bytes,
                max_message_bytes=MAX_MESSAGE_BYTES,
            )
        return stream

    def _submit(self, body: bytes) -> Callable[[str, float], asyncio.Future[pb.ClientResult]]:
        return lambda address, remaining: self.stream(address).submit(
            body, remaining, fail_fast=True
        )

    async def _send(self, body: bytes, kind: str, key: bytes | None, timeout: float) -> Any:
        """One call: tried on the best node for `key`, hedged and retried (see Tries)."""
        if self._closed:
            raise TransportError("the client is closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._route_by_ring and now >= self._topology_due:
            await self._learn_topology(now, min(TOPOLOGY_TIMEOUT_S, timeout / 2))
            now = loop.time()
        stats = self._stats
        stats.calls += 1
        self._hedge_budget.earn()
        nodes, primaries = self._nodes.order(key, now)
        for address in self._nodes.probes_due(now):
            self._probe(address, now)
        if key is not None and self._nodes.table is not None and self._nodes.table.ring:
            stats.routed_calls += 1
            if primaries:
                stats.to_primary += 1
        tries = Tries(
            self._submit(body),
            kind,
            nodes,
            self._nodes,
            now + timeout + DEADLINE_SLACK_S,
            self._hedge_delay(kind),
            self._retry,
            self._read_latency if kind.startswith("get") else self._write_latency,
            stats,
            self._rng,
            self._hedge_budget,
            self._still_answers,
        )
        tries.start()
        try:
            result = await tries.result
        except KvError:
            stats.failed += 1
            if not self._any_reachable(loop.time()):
                self._topology_due = 0.0  # ask again on the next call
            raise
        got = result.WhichOneof("result")
        if got != kind:
            raise KvError(f"a node answered a {kind} with {got}")
        return getattr(result, kind)

    def _still_answers(self, address: str, within: float, since: float) -> asyncio.Future[bool]:
        """Whether the node at `address` still answers: it answered calls on its stream after
        `since` (a busy node does, a stopped or frozen one does not), or else answers its
        health check within `within` seconds (at most the hedge policy's write_probe_s). One
        check per node at a time: the slow writes of a node that stalled share it."""
        stream = self._streams.get(address)
        if stream is not None and stream.last_answer_at > since:
            answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            answered.set_result(True)
            return answered
        check = self._alive_checks.get(address)
        if check is not None and not check.done():
            return check
        timeout = min(within, self._hedge.write_probe_s)

        async def ask() -> bool:
            try:
                status = await self._health(address, "kvstore.v1.KV", timeout)
            except (TimeoutError, KvError):
                return False
            return status == "SERVING"

        check = self._alive_checks[address] = asyncio.ensure_future(ask())
        return check

    def _probe(self, address: str, now: float) -> None:
        """Ask a node whose breaker half-opened whether it serves again (the health check of
        its client port): the answer closes the breaker or opens it for longer."""
        breaker = self._nodes.breaker(address)
        breaker.take(now)

        async def probe() -> None:
            try:
                serving = await self._health(address, "kvstore.v1.KV", PROBE_TIMEOUT_S)
            except (TimeoutError, KvError):
                serving = "DOWN"
            if serving == "SERVING":
                breaker.success()
            else:
                breaker.failure(asyncio.get_running_loop().time())

        task = asyncio.get_running_loop().create_task(probe())
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _hedge_delay(self, kind: str) -> float | None:
        # Asked by every call: worked out again only when the latencies may have moved.
        reads = kind.startswith("get")
        window = self._read_latency if reads else self._write_latency
        version = window.version if len(window) >= self._hedge.min_samples else -1 - len(window)
        cached = self._hedge_delays[reads]
        if cached[0] != version:
            cached = self._hedge_delays[reads] = (version, self._work_out_hedge_delay(kind))
        return cached[1]

    def _work_out_hedge_delay(self, kind: str) -> float | None:
        policy = self._hedge
        if kind.startswith("get"):
            if not policy.reads:
                return None
            window, q, factor = self._read_latency, policy.read_percentile, 1.0
        else:
            if not policy.writes:
                return None
            window, q, factor = self._write_latency, policy.write_percentile, policy.write_factor
        if len(window) < policy.min_samples:
            return policy.initial_delay_s
        delay = window.percentile(q) * factor
        return min(policy.max_delay_s, max(policy.min_delay_s, delay))

    def _any_reachable(self, now: float) -> bool:
        return any(self._nodes.breaker(a).available(now) for a in self._nodes.addresses)

    async def _learn_topology(self, now: float, budget: float) -> None:
        """Ask for the ring: awaited (within `budget`) while the client has none, so its
        first calls route by it; in the background after, calls using the last one."""
        self._topology_due = now + self._refresh_s
        task = self._topology_task
        if task is None or task.done():
            task = self._topology_task = asyncio.get_running_loop().create_task(
                self._ask_topology(TOPOLOGY_TIMEOUT_S)
            )
        if self._nodes.table is None:
            # Shared by the calls that arrive together; a caller giving up leaves it running.
            await asyncio.wait({task}, timeout=budget)

    async def _ask_topology(self, budget: float) -> None:
        """Members first (a seed may have been removed), then the seeds (all the members
        moved); one answer is enough. The whole ask stays within `budget`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        known = self._nodes.addresses
        candidates = known + [s for s in self._nodes.seeds if s not in known]
        for address in candidates[:TOPOLOGY_CANDIDATES]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                answer = await self._pool.stub(address).Topology(
                    pb.TopologyRequest(), timeout=remaining
                )
                table = table_from(answer)
            except grpc.aio.AioRpcError as exc:
                log.debug("topology from %s: %s", address, exc.code())
                continue
            except KvError as exc:
                log.warning("topology from %s not used: %s", address, exc)
                continue
            current = self._nodes.table
            if (
                current is not None
                and current.ring is not None
                and (table.ring is None or table.epoch < current.epoch)
            ):
                continue  # a node behind the one asked before (restarted from an old view)
            self._nodes.table = table
            self._stats.topology_refreshes += 1
            if not table.complete:
                # Asked before gossip spread every member's record: ask again soon.
                self._topology_due = min(self._topology_due, loop.time() + TOPOLOGY_RETRY_S)
            return
        if self._nodes.table is None:
            self._topology_due = min(self._topology_due, loop.time() + TOPOLOGY_RETRY_S)

    def stats(self) -> ClientStats:
        """A copy of what the client's calls did so far, with each node's breaker state."""
        now = time.monotonic()  # the clock of the event loop's time(), which breakers keep
        snapshot = dataclasses.replace(self._stats, breakers={})
        for address in self._nodes.addresses:
            breaker = self._nodes.breaker(address)
            snapshot.breakers[address] = breaker.state(now).value
            snapshot.breaker_opens += breaker.opened
        return snapshot

    async def get(
        self,
        key: Key,
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> GetResult:
        """As Client.get."""
        timeout = self._requests.call_timeout(timeout)
        request = self._requests.get_request(key, r, sloppy, timeout)
        response = await self._send(get_call(request), "get", request.key, timeout)
        return self._requests.get_result(response, resolver)

    async def put(
        self,
        key: Key,
        value: bytes,
        context: bytes | None = None,
        w: int | None = None,
        sloppy: bool = True,
        return_body: bool = False,
        resolver: Resolver | None = None,
        timeout: float | None = None,
    ) -> PutResult:
        """As Client.put."""
        timeout = self._requests.call_timeout(timeout)
        request = self._requests.put_request(key, value, context, w, sloppy, return_body, timeout)
        response = await self._send(put_call(request), "put", request.key, timeout)
        return self._requests.put_result(response, resolver)

    async def delete(
        self,
        key: Key,
        context: bytes | None = None,
        w: int | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> PutResult:
        """As Client.delete."""
        timeout = self._requests.call_timeout(timeout)
        request = self._requests.put_request(key, None, context, w, sloppy, False, timeout)
        response = await self._send(put_call(request), "put", request.key, timeout)
        return self._requests.put_result(response, None)

    async def get_many(
        self,
        keys: Iterable[Key],
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> list[GetItem]:
        """As Client.get_many."""
        timeout = self._requests.call_timeout(timeout)
        request = self._requests.get_many_request(keys, r, sloppy, timeout)
        if not request.keys:
            return []
        response = await self._send(get_many_call(request), "get_many", None, timeout)
        return self._requests.get_many_result(response, len(request.keys), resolver)

    async def put_many(
        self,
        items: Iterable[PutLike],
        w: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> list[PutResultItem]:
        """As Client.put_many."""
        timeout = self._requests.call_timeout(timeout)
        request = self._requests.put_many_request(items, w, sloppy, timeout)
        return await self._put_many(request, resolver, timeout)

    async def delete_many(
        self,
        items: Iterable[DeleteLike],
        w: int | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> list[PutResultItem]:
        """As Client.delete_many."""
        timeout = self._requests.call_timeout(timeout)
        request = self._requests.delete_many_request(items, w, sloppy, timeout)
        return await self._put_many(request, None, timeout)

    async def _put_many(
        self, request: pb.PutManyRequest, resolver: Resolver | None, timeout: float
    ) -> list[PutResultItem]:
        if not request.items:
            return []
        response = await self._send(put_many_call(request), "put_many", None, timeout)
        return self._requests.put_many_result(response, len(request.items), resolver)

    # ---- asked of one node (operators, debugging): unary calls, not retried elsewhere ----

    async def _call(self, address: str, send: Callable[[], Awaitable[T]]) -> T:
        try:
            return await send()
        except grpc.aio.AioRpcError as exc:
            error, _ = failure(exc, address)
            raise error from None

    def _admin(self, node_address: str) -> pb_grpc.AdminStub:
        self._pool.stub(node_address)  # opens (or reuses) the channel to the node
        return pb_grpc.AdminStub(self._pool.channels[node_address])

    async def local_get(self, node_address: str, key: Key) -> GetResult:
        """As Client.local_get."""
        request = pb.LocalGetRequest(key=key_bytes(key))
        deadline = self._requests.deadline_s
        response = await self._call(
            node_address,
            lambda: self._admin(node_address).LocalGet(
                request, timeout=deadline, wait_for_ready=True
            ),
        )
        return self._requests.get_result(response, resolver=None)

    async def status(self, node_address: str) -> pb.StatusResponse:
        """As Client.status."""
        deadline = self._requests.deadline_s
        response: pb.StatusResponse = await self._call(
            node_address,
            lambda: self._admin(node_address).Status(pb.StatusRequest(), timeout=deadline),
        )
        return response

    async def join(self, node_address: str) -> None:
        """As Client.join."""
        deadline = self._requests.deadline_s
        await self._call(
            node_address,
            lambda: self._admin(node_address).Join(pb.JoinRequest(), timeout=deadline),
        )

    async def leave(self, node_address: str) -> None:
        """As Client.leave."""
        deadline = self._requests.deadline_s
        await self._call(
            node_address,
            lambda: self._admin(node_address).Leave(pb.LeaveRequest(), timeout=deadline),
        )

    async def remove(self, address: str, via: str) -> None:
        """As Client.remove."""
        deadline = self._requests.deadline_s
        await self._call(
            via,
            lambda: self._admin(via).Remove(pb.RemoveRequest(address=address), timeout=deadline),
        )

    async def locate(self, node_address: str, key: Key) -> pb.LocateResponse:
        """As Client.locate."""
        request = pb.LocateRequest(key=key_bytes(key))
        deadline = self._requests.deadline_s
        response: pb.LocateResponse = await self._call(
            node_address, lambda: self._admin(node_address).Locate(request, timeout=deadline)
        )
        return response

    async def health(self, node_address: str, service: str = "") -> str:
        """As Client.health."""
        return await self._health(node_address, service, self._requests.deadline_s)

    async def _health(self, node_address: str, service: str, deadline: float) -> str:
        self._pool.stub(node_address)
        stub = health_pb2_grpc.HealthStub(self._pool.channels[node_address])
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = await stub.Check(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # a name the port does not report
                return "SERVICE_UNKNOWN"
            raise failure(exc, node_address)[0] from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def drain(
        self, node_address: str, timeout: float = 0.0, stay: bool = False
    ) -> pb.DrainResponse:
        """As Client.drain."""
        request = pb.DrainRequest(timeout_ms=round(timeout * 1000), stay=stay)
        # The node answers once the drain is done: wait past its timeout (or its default).
        deadline = self._requests.deadline_s + (timeout or 10.0)
        response: pb.DrainResponse = await self._call(
            node_address, lambda: self._admin(node_address).Drain(request, timeout=deadline)
        )
        return response

    async def repair(
        self, node_address: str, partitions: Sequence[int] = (), timeout: float = 0.0
    ) -> pb.RepairResponse:
        """As Client.repair."""
        request = pb.RepairRequest(partitions=list(partitions), timeout_ms=round(timeout * 1000))
        deadline = self._requests.deadline_s + (timeout or 60.0)
        response: pb.RepairResponse = await self._call(
            node_address, lambda: self._admin(node_address).Repair(request, timeout=deadline)
        )
        return response

    async def topology(self, node_address: str | None = None) -> pb.TopologyResponse:
        """The members and ring a node answers KV.Topology with (any member when None)."""
        address = node_address or self._nodes.addresses[0]
        deadline = self._requests.deadline_s
        response: pb.TopologyResponse = await self._call(
            address,
            lambda: self._pool.stub(address).Topology(pb.TopologyRequest(), timeout=deadline),
        )
        return response

    async def close(self) -> None:
        self._closed = True
        checks, self._alive_checks = list(self._alive_checks.values()), {}
        pending: list[asyncio.Future[Any]] = [*self._probes, *checks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._topology_task is not None:
            self._topology_task.cancel()
            await asyncio.gather(self._topology_task, return_exceptions=True)
            self._topology_task = None
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.close()
        for channel in self._pool.take_channels():
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The blocking client: the same methods and options as AsyncClient, run on an AsyncClient
of its own on an event loop thread it owns, so its calls ride the same multiplexed streams,
routing, hedging and retries (and calls from many threads share them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client._calls import ClientStats
from kvstore.client._common import DeleteLike, Key, PutLike, Resolver
from kvstore.client._loop import LoopThread
from kvstore.client.aio import CLIENT_INFLIGHT_BYTES, TOPOLOGY_REFRESH_S, AsyncClient
from kvstore.client.credentials import TLS
from kvstore.client.policy import BreakerPolicy, HedgePolicy, RetryPolicy
from kvstore.client.results import GetItem, GetResult, PutResult, PutResultItem


class Client:
    """Talks to a cluster: each call goes to a primary of its key (the client learns the
    ring from the seeds), a slow read or write is hedged on the next node, a failed one
    retried on another (writes carry write ids, so a retry never applies a write twice), and
    a node that fails or stalls is skipped while its circuit breaker is open.

    with Client("127.0.0.1:8101,127.0.0.1:8102", timeout=2.0) as kv:
        kv.put("k", b"v")
        print(kv.get("k", timeout=0.5).values)
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
        """As AsyncClient: `seeds` (client addresses), `timeout` (each call's budget,
        retries and hedges included; a call's own `timeout=` overrides it), `tls`/`token`
        (None: from KVSTORE_TLS_*/KVSTORE_TOKEN if set; False: plaintext), the `retry`,
        `hedge` and `breaker` policies, `route_by_ring`, `topology_refresh_s`."""
        self._closed = False
        self._loop = LoopThread()
        try:
            make = partial(
                AsyncClient,
                seeds,
                timeout,
                resolver,
                max_inflight_bytes,
                tls,
                token,
                retry,
                hedge,
                breaker,
                route_by_ring,
                topology_refresh_s,
            )
            self._async = self._loop.run(_on_loop(make))
        except BaseException:
            self._loop.close()  # no thread left behind by a client that never was
            raise

    def get(
        self,
        key: Key,
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> GetResult:
        """`sloppy=False` counts only the key's primaries towards r (Riak's PR)."""
        return self._loop.run(self._async.get(key, r, resolver, sloppy, timeout))

    def put(
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
        """`sloppy=False` counts only the key's primaries towards w (Riak's PW): no
        fallback stands in for a primary that is down. `return_body=True` answers with the
        siblings after the write (`PutResult.values`, merged by the resolver if one is
        given) and a context covering them."""
        return self._loop.run(
            self._async.put(key, value, context, w, sloppy, return_body, resolver, timeout)
        )

    def delete(
        self,
        key: Key,
        context: bytes | None = None,
        w: int | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> PutResult:
        return self._loop.run(self._async.delete(key, context, w, sloppy, timeout))

    # ---- batches: one request, per-key results ----

    def get_many(
        self,
        keys: Iterable[Key],
        r: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> list[GetItem]:
        """Read many keys in one request: a list in the keys' order, each item the key's
        GetResult or the error reading it failed with (InvalidKey, Unavailable, ...: the
        errors `get` raises). A batch past the node's max_batch_items (1,000 by default) is
        refused whole, BatchTooLarge; so is an option out of range (InvalidOption)."""
        return self._loop.run(self._async.get_many(keys, r, resolver, sloppy, timeout))

    def put_many(
        self,
        items: Iterable[PutLike],
        w: int | None = None,
        resolver: Resolver | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> list[PutResultItem]:
        """Write many keys in one request. Each item is a PutItem(key, value, context,
        return_body) or a (key, value) / (key, value, context) tuple, with its own context;
        a value of None deletes. Answers a list in the items' order, each the item's
        PutResult or its error. The node commits the writes that arrive together in one
        RocksDB WriteBatch; a failed item does not fail the others."""
        return self._loop.run(self._async.put_many(items, w, resolver, sloppy, timeout))

    def delete_many(
        self,
        items: Iterable[DeleteLike],
        w: int | None = None,
        sloppy: bool = True,
        timeout: float | None = None,
    ) -> list[PutResultItem]:
        """Delete many keys: each item a key or a (key, context) pair."""
        return self._loop.run(self._async.delete_many(items, w, sloppy, timeout))

    def stats(self) -> ClientStats:
        """What the client's calls did so far: tries, hedges, retries, calls routed to a
        primary of their key, and each node's circuit breaker."""

        async def snapshot() -> ClientStats:
            return self._async.stats()

        return self._loop.run(snapshot())

    # ---- asked of one node (operators, debugging) ----

    def local_get(self, node_address: str, key: Key) -> GetResult:
        """One node's own stored versions of a key, without coordination (debugging, tests).

        Asks only that node (its cluster address), so it waits (within the timeout) for a
        connection to it rather than failing at once while the channel is backing off after
        the node restarted."""
        return self._loop.run(self._async.local_get(node_address, key))

    def status(self, node_address: str) -> pb.StatusResponse:
        """The node's view: members (state, up/down, partitions), ring epoch, pending hints
        and handoffs, and its counters."""
        return self._loop.run(self._async.status(node_address))

    def join(self, node_address: str) -> None:
        """Ask a standby node (started with seeds that do not list it) to join the ring."""
        self._loop.run(self._async.join(node_address))

    def leave(self, node_address: str) -> None:
        """Ask a node to leave the ring: its partitions move to the others first."""
        self._loop.run(self._async.leave(node_address))

    def remove(self, address: str, via: str) -> None:
        """Take a dead member out of the ring, asking the node `via` (any live member).
        Refused (ClusterRefused) while `via` holds it up: a live node should leave."""
        self._loop.run(self._async.remove(address, via))

    def drain(
        self, node_address: str, timeout: float = 0.0, stay: bool = False
    ) -> pb.DrainResponse:
        """Drain the node (see kvstore.node.drain): it refuses new client requests, finishes
        those in flight, delivers its hints within `timeout` seconds (0: the node's default,
        10 s) and, unless `stay`, then stops. The call waits for all that."""
        return self._loop.run(self._async.drain(node_address, timeout, stay))

    def repair(
        self, node_address: str, partitions: Sequence[int] = (), timeout: float = 0.0
    ) -> pb.RepairResponse:
        """Run anti-entropy now on the node with every other replica of the partitions
        named (all it holds when none are), within `timeout` seconds (0: the node's default,
        60 s); answers what it compared and repaired."""
        return self._loop.run(self._async.repair(node_address, partitions, timeout))

    def locate(self, node_address: str, key: Key) -> pb.LocateResponse:
        """Where `key` lives by the node's ring: its primaries (and those of a pending ring)."""
        return self._loop.run(self._async.locate(node_address, key))

    def health(self, node_address: str, service: str = "") -> str:
        """The node's answer to the standard grpc.health.v1 check for `service` ("" the
        node, or kvstore.v1.KV on a client port, kvstore.v1.Peer/Admin on a cluster port):
        SERVING once it knows a ring and takes client calls, NOT_SERVING before and while it
        drains; SERVICE_UNKNOWN for a name the port does not report (raises TransportError if
        it does not answer at all)."""
        return self._loop.run(self._async.health(node_address, service))

    def topology(self, node_address: str | None = None) -> pb.TopologyResponse:
        """The members and ring a node answers KV.Topology with (any member when None)."""
        return self._loop.run(self._async.topology(node_address))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._async.close())
        finally:
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _on_loop(make: Callable[[], AsyncClient]) -> AsyncClient:
    """Made on the loop thread, so its channels belong to that loop."""
    return make()

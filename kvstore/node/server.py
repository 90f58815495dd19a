"""Running a node: open storage, build the roles (`build_node`, the one composition root),
serve them over gRPC, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections import Counter
from dataclasses import dataclass

from kvstore.config import NodeConfig
from kvstore.core.failure import PhiAccrualDetector
from kvstore.core.limits import Limits
from kvstore.core.membership import Membership
from kvstore.core.transport import PeerTransport
from kvstore.errors import ConfigError
from kvstore.node.admin import Admin
from kvstore.node.antientropy import AntiEntropy
from kvstore.node.clock import Clock, SystemClock
from kvstore.node.coordinator import Coordinator
from kvstore.node.drain import Drain
from kvstore.node.gossip import Gossip
from kvstore.node.handoff import Handoff
from kvstore.node.hints import HintDelivery
from kvstore.node.metrics import NodeMetrics
from kvstore.node.metricsserver import MetricsServer
from kvstore.node.replica import Replica
from kvstore.node.router import Router
from kvstore.node.stallfence import StallFence
from kvstore.node.storagewatch import StorageWatch
from kvstore.node.tasks import TaskSet
from kvstore.node.tombstones import TombstoneGC
from kvstore.rpc.badinput import install_grpc_filter
from kvstore.rpc.peer import PeerClient
from kvstore.rpc.server import GrpcServer
from kvstore.rpc.servicers import (
    DEFAULT_MESSAGE_BYTES,
    AdminServicer,
    KVServicer,
    PeerServicer,
)
from kvstore.rpc.tls import NodeTls
from kvstore.security import identity_from_cert
from kvstore.storage.codec import decode_cluster
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

# gRPC frame ceiling: a get or a replica merge can carry every sibling of a key.
_FRAME_SLACK = 1 << 20
# The least client frame, whatever the limits: batches of small values fit in it.
_CLIENT_FRAME_FLOOR = 8 << 20


def max_message_bytes(config: NodeConfig) -> int:
    limits = config.limits
    per_sibling = limits.max_value_bytes + limits.max_key_bytes + 256
    return min(per_sibling * (limits.max_siblings + 1) + _FRAME_SLACK, 2**31 - 1)


def client_message_bytes(config: NodeConfig) -> int:
    """The largest message the client port takes in: a put of the largest value, and room
    for a batch of small ones. Sized from max_value_bytes, not from a peer's pages (a page
    holds a key's every sibling): a dozen concurrent 34 MB frames took a node to 746 MB."""
    limits = config.limits
    return max(limits.max_value_bytes + limits.max_key_bytes + _FRAME_SLACK, _CLIENT_FRAME_FLOOR)


@dataclass(frozen=True)
class NodeParts:
    """Every role and background service of one node, wired to each other."""

    address: str
    clock: Clock
    membership: Membership
    router: Router
    replica: Replica
    coordinator: Coordinator
    admin: Admin
    gossip: Gossip
    anti_entropy: AntiEntropy
    handoff: Handoff
    hints: HintDelivery
    tombstones: TombstoneGC
    counters: Counter[str]
    tasks: TaskSet
    limits: Limits
    metrics: NodeMetrics
    drain: Drain
    stall_fence: StallFence

    @property
    def background(self) -> tuple[Gossip, AntiEntropy, Handoff, HintDelivery, TombstoneGC]:
        return (self.gossip, self.anti_entropy, self.handoff, self.hints, self.tombstones)

    def servicers(
        self, max_message_bytes: int = DEFAULT_MESSAGE_BYTES, client_receive_bytes: int = 0
    ) -> tuple[KVServicer, PeerServicer, AdminServicer]:
        return (
            KVServicer(
                self.coordinator,
                self.replica,
                self.counters,
                max_message_bytes,
                self.limits,
                client_receive_bytes or max_message_bytes,
                self.admin,
                self.metrics,
                gate=self.drain,
            ),
            PeerServicer(
                self.replica,
                self.coordinator,
                self.gossip,
                self.anti_entropy,
                self.handoff,
                self.admin,
                self.counters,
                max_message_bytes,
            ),
            AdminServicer(self.admin, self.replica, drain=self.drain, repair=self.anti_entropy),
        )


def build_node(
    config: NodeConfig,
    storage: Storage,
    actor: str,
    transport: PeerTransport,
    membership: Membership,
    clock: Clock | None = None,
    counters: Counter[str] | None = None,
) -> NodeParts:
    """The composition root: each role gets exactly what it uses. `counters`: the node's
    event counts (the Status RPC reports them), shared with the transport when given."""
    clock = clock or SystemClock()
    address = config.advertise
    limits, background, n = config.limits, config.background, config.quorum.n
    timeout_ms = limits.request_timeout_ms
    # Events worth an operator's eye (hints stored/delivered/dropped, read repairs, ...).
    counters = Counter() if counters is None else counters
    tasks = TaskSet()
    router = Router(address, membership, n, clock, config.seeds)
    replica = Replica(address, actor, storage, limits, clock, counters, background.hint_max_bytes)
    handoff: Handoff | None = None
    admin = Admin(
        address,
        config.node_id,
        actor,
        membership,
        router,
        storage,
        limits,
        clock,
        counters,
        config.partitions,
        n,
        handoffs_pending=lambda: handoff.pending_pulls() if handoff else 0,
    )
    gossip = Gossip(
        address,
        membership,
        router,
        transport,
        storage,
        clock,
        background.gossip_interval_ms,
        join=admin.join if config.auto_join else None,
    )
    handoff = Handoff(
        address,
        membership,
        router,
        storage,
        transport,
        clock,
        counters,
        n,
        timeout_ms,
        background.handoff_interval_ms,
        save_cluster=gossip.save,
        limits=limits,
    )
    stall_fence = StallFence(clock, counters)
    coordinator = Coordinator(
        address,
        router,
        replica,
        transport,
        clock,
        limits,
        config.quorum,
        background.replica_timeout_ms,
        counters,
        tasks,
        catch_up=gossip.exchange,
        fence=stall_fence.check,
    )
    anti_entropy = AntiEntropy(
        address,
        router,
        storage,
        transport,
        clock,
        counters,
        timeout_ms,
        background.anti_entropy_interval_ms,
        limits=limits,
    )
    hints = HintDelivery(
        address,
        membership,
        router,
        storage,
        transport,
        clock,
        counters,
        timeout_ms,
        background.hint_max_age_s,
        background.hint_interval_ms,
    )
    tombstones = TombstoneGC(
        address,
        router,
        storage,
        transport,
        clock,
        counters,
        background.tombstone_grace_s,
        timeout_ms,
        background.tombstone_gc_interval_ms,
    )
    pulls_pending = handoff.pending_pulls
    metrics = NodeMetrics(
        counters,
        lambda: {
            "hints_pending": storage.hint_count,
            "hint_bytes": storage.hint_bytes,
            "handoff_partitions_pending": pulls_pending(),
        },
        storage.stats,
    )
    return NodeParts(
        address=address,
        clock=clock,
        membership=membership,
        router=router,
        replica=replica,
        coordinator=coordinator,
        admin=admin,
        gossip=gossip,
        anti_entropy=anti_entropy,
        handoff=handoff,
        hints=hints,
        tombstones=tombstones,
        counters=counters,
        tasks=tasks,
        limits=limits,
        metrics=metrics,
        drain=Drain(clock, hints.round, lambda: storage.hint_count),
        stall_fence=stall_fence,
    )


async def serve(config: NodeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or the process gets SIGTERM/SIGINT."""
    # Before the port opens: from then on any caller can make grpc log (a traceback per
    # undecodable request, unfiltered).
    install_grpc_filter()
    storage = Storage(config.data_dir, sync=config.sync_writes)
    try:
        actor = storage.claim_identity(config.node_id)
        message_bytes = max_message_bytes(config)
        clock = SystemClock()
        counters: Counter[str] = Counter()
        tls = NodeTls.load(config.security)
        if tls is not None:
            speaks_for = identity_from_cert(tls.cert).node
            if speaks_for != config.advertise:
                # Peers check that a member speaks only for the address its certificate
                # names: a node advertising another would be refused by all of them.
                raise ConfigError(
                    f"tls_cert is for member {speaks_for!r}, but this node advertises"
                    f" {config.advertise!r}: give it the certificate issued for its address"
                )
        peers = PeerClient(
            message_bytes,
            dict(config.peer_routes),
            counters=counters,
            credentials=tls.to_peers() if tls else None,
        )
        node = build_node(
            config, storage, actor, peers, start_membership(config, storage, clock), clock, counters
        )
        server = GrpcServer(
            *node.servicers(message_bytes, client_message_bytes(config)),
            max_message_bytes=message_bytes,
            limits=config.limits,
            client_receive_bytes=client_message_bytes(config),
            guard=tls.guard(node.membership.is_removed) if tls else None,
        )
        stop = stop or asyncio.Event()
        health = Health(server)
        await health.update()
        # A drain turns the client health NOT_SERVING at once, and (unless it stays) ends
        # the way SIGTERM does.
        node.drain.on_draining = lambda: health.update(draining=True)
        node.drain.exit = stop.set
        node.gossip.on_ring_known = lambda: health.update(ring_known=True)
        if node.router.ring is not None:
            await health.update(ring_known=True)
        watch = StorageWatch(
            storage, counters, lambda writable: health.update(storage_writable=writable)
        )
        await server.start(
            config.client_listen,
            config.listen,
            client_credentials=tls.client_port() if tls else None,
            cluster_credentials=tls.cluster_port() if tls else None,
        )
        metrics_server = MetricsServer(node.metrics.registry)
        if config.metrics_listen:
            try:
                await metrics_server.start(config.metrics_listen)
            except OSError as exc:
                # Metrics are for watching the node: their port taken is no reason to
                # refuse the node's data. Said loudly, and Status still has the counters.
                log.error("metrics endpoint not served on %s: %s", config.metrics_listen, exc)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ring = node.router.ring
        # One parseable line for scripts and tests waiting on start-up.
        print(
            f"kvstore node {config.node_id} ready on {config.listen}"
            f" clients={config.client_listen} actor={actor}"
            f" members={','.join(ring.members) if ring else '(none yet)'}"
            f" metrics={config.metrics_listen or 'off'}",
            flush=True,
        )
        loops = [
            asyncio.create_task(work.run()) for work in (*node.background, watch, node.stall_fence)
        ]
        await stop.wait()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        node.gossip.save()
        log.info("stopping node %s", config.node_id)
        await metrics_server.stop()
        await server.stop(grace_s=2.0)
        await node.tasks.close()
        await peers.close()
    finally:
        storage.close()


class Health:
    """What the health service says: SERVING while the node knows a ring (it can coordinate)
    and its storage takes writes (see node.storagewatch); NOT_SERVING otherwise. A draining
    node (node.drain) says NOT_SERVING for its client service only: it is still a replica."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self.ring_known = False
        self.storage_writable = True
        self.draining = False

    async def update(
        self,
        ring_known: bool | None = None,
        storage_writable: bool | None = None,
        draining: bool | None = None,
    ) -> None:
        if ring_known is not None:
            self.ring_known = ring_known
        if storage_writable is not None:
            self.storage_writable = storage_writable
        if draining is not None:
            self.draining = draining
        replica = self.ring_known and self.storage_writable
        await self._server.set_serving(clients=replica and not self.draining, peers=replica)


def start_membership(
    config: NodeConfig, storage: Storage, clock: Clock | None = None
) -> Membership:
    """This node's membership: from the state it saved, or bootstrapped from its seeds."""
    interval = config.background.gossip_interval_ms / 1000
    # A peer's heartbeat reaches us through gossip in one to a few rounds: the detector's
    # prior and its least deviation scale with the round, so a faster gossip detects faster.
    # The pause allowance has a floor: a busy 2-core machine stalls an event loop for close to
    # a second now and then, which must not read as a death when gossip runs every 200 ms.
    detector = PhiAccrualDetector(
        threshold=config.background.phi_threshold,
        min_std_s=max(interval / 2, 0.2),
        acceptable_pause_s=max(2 * interval, 1.0),
        first_interval_s=interval * 2,
    )
    clock = clock or SystemClock()
    saved = storage.load_cluster()
    return Membership(
        address=config.advertise,
        node_id=config.node_id,
        incarnation=clock.wall_ms(),
        partitions=config.partitions,
        n=config.quorum.n,
        seeds=config.seeds,
        detector=detector,
        now=clock.monotonic(),
        saved=None if saved is None else decode_cluster(saved),
        bootstrap=config.bootstraps,
        client_address=config.client_advertise,
    )


def run(config: NodeConfig) -> int:
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return 1
    return 0

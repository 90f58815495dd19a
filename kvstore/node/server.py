"""Running a node: open storage, start the gRPC server, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.config import NodeConfig
from kvstore.core.failure import PhiAccrualDetector
from kvstore.core.membership import Membership
from kvstore.node.antientropy import AntiEntropy
from kvstore.node.app import Node
from kvstore.node.gossip import Gossip
from kvstore.node.handoff import Handoff
from kvstore.node.hints import HintDelivery
from kvstore.node.tombstones import TombstoneGC
from kvstore.rpc.peer import PeerClient, channel_options
from kvstore.rpc.servicers import AdminServicer, KVServicer, PeerServicer
from kvstore.storage.codec import decode_cluster
from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

# gRPC frame ceiling: a get or a replica merge can carry every sibling of a key.
_FRAME_SLACK = 1 << 20


def max_message_bytes(config: NodeConfig) -> int:
    limits = config.limits
    per_sibling = limits.max_value_bytes + limits.max_key_bytes + 256
    return min(per_sibling * (limits.max_siblings + 1) + _FRAME_SLACK, 2**31 - 1)


async def serve(config: NodeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or the process gets SIGTERM/SIGINT."""
    storage = Storage(config.data_dir, sync=config.sync_writes)
    try:
        actor = storage.claim_identity(config.node_id)
        message_bytes = max_message_bytes(config)
        peers = PeerClient(message_bytes, dict(config.peer_routes))
        node = Node(config, storage, actor, peers, start_membership(config, storage))
        gossip = Gossip(node)
        anti_entropy = AntiEntropy(node)
        handoff = Handoff(node, gossip)
        hints = HintDelivery(node)
        tombstones = TombstoneGC(node)
        server = grpc.aio.server(options=channel_options(message_bytes))
        pb_grpc.add_KVServicer_to_server(KVServicer(node), server)
        pb_grpc.add_PeerServicer_to_server(PeerServicer(node, gossip, anti_entropy), server)
        pb_grpc.add_AdminServicer_to_server(AdminServicer(node, handoff), server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)
        gossip.on_ring_known = lambda: _set_health(health, health_pb2.HealthCheckResponse.SERVING)
        if node.ring is not None:
            await _set_health(health, health_pb2.HealthCheckResponse.SERVING)
        if server.add_insecure_port(config.listen) == 0:
            raise OSError(f"cannot listen on {config.listen}")
        await server.start()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # One parseable line for scripts and tests waiting on start-up.
        print(
            f"kvstore node {config.node_id} ready on {config.listen} actor={actor}"
            f" members={','.join(node.ring.members) if node.ring else '(none yet)'}",
            flush=True,
        )
        loops = [
            asyncio.create_task(work.run())
            for work in (gossip, anti_entropy, handoff, hints, tombstones)
        ]
        await stop.wait()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        gossip.save()
        log.info("stopping node %s", config.node_id)
        await server.stop(grace=2.0)
        await node.close()
        await peers.close()
    finally:
        storage.close()


async def _set_health(health: HealthServicer, status: int) -> None:
    """Probes (docker HEALTHCHECK, k8s readiness) pass once the node knows a ring and so can
    coordinate requests; before that it answers NOT_SERVING (the servicer's own default for
    the whole server is SERVING, which would be a lie while the node waits for its seeds)."""
    for service in ("", "kvstore.KV"):
        await health.set(service, status)


def start_membership(config: NodeConfig, storage: Storage) -> Membership:
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
    saved = storage.load_cluster()
    return Membership(
        address=config.advertise,
        node_id=config.node_id,
        incarnation=time.time_ns() // 1_000_000,
        partitions=config.partitions,
        n=config.quorum.n,
        seeds=config.seeds,
        detector=detector,
        now=time.monotonic(),
        saved=None if saved is None else decode_cluster(saved),
        bootstrap=config.bootstraps,
    )


def run(config: NodeConfig) -> int:
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return 1
    return 0

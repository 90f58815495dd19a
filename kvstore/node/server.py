"""Running a node: open storage, start the gRPC server, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import grpc

from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.config import NodeConfig
from kvstore.node.app import Node
from kvstore.rpc.peer import PeerClient, channel_options
from kvstore.rpc.servicers import KVServicer, PeerServicer
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
        peers = PeerClient(message_bytes)
        node = Node(config, storage, actor, peers)
        server = grpc.aio.server(options=channel_options(message_bytes))
        pb_grpc.add_KVServicer_to_server(KVServicer(node), server)
        pb_grpc.add_PeerServicer_to_server(PeerServicer(node), server)
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
            f" members={','.join(config.members)}",
            flush=True,
        )
        checker = asyncio.create_task(node.check_peers())
        await stop.wait()
        checker.cancel()
        log.info("stopping node %s", config.node_id)
        await server.stop(grace=2.0)
        await node.close()
        await peers.close()
    finally:
        storage.close()


def run(config: NodeConfig) -> int:
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return 1
    return 0

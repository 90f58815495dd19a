"""The node's gRPC servers, one per port (as Cassandra's native and storage ports):

* the client port: the KV service, with a frame limit sized from max_value_bytes;
* the cluster port: the Peer and Admin services, with frames sized for a peer's pages;

and the standard health service on both, each port reporting its own services by their full
names. A firewall and a TLS policy can tell them apart: only members and operators have any
business on the cluster port."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.limits import DEFAULT_LIMITS, Limits
from kvstore.rpc.auth import Guard, open_access
from kvstore.rpc.peer import channel_options
from kvstore.rpc.servicers import AdminServicer, KVServicer, PeerServicer

# The names health is reported under on each port (grpc.health.v1 service names: the
# services' full names, and "" for the port as a whole):
# * client port: "" and kvstore.v1.KV, SERVING while the node takes client requests (it
#   knows a ring, its storage takes writes, it is not draining): readiness;
# * cluster port: "" and kvstore.v1.Peer, SERVING while it serves as a replica (knows a
#   ring, storage writable; a draining node still does); kvstore.v1.Admin, SERVING while
#   the process serves at all (liveness: a node waiting for its seeds, or with a full
#   disk, must not be restarted for it).
CLIENT_HEALTH = ("", "kvstore.v1.KV")
PEER_HEALTH = ("", "kvstore.v1.Peer")
ADMIN_HEALTH = "kvstore.v1.Admin"


def server_options(
    max_message_bytes: int, limits: Limits = DEFAULT_LIMITS, receive_bytes: int | None = None
) -> list[tuple[str, int]]:
    """`receive_bytes`: the largest message taken in (default: `max_message_bytes`, the
    largest sent)."""
    options = dict(channel_options(max_message_bytes))
    if receive_bytes is not None:
        options["grpc.max_receive_message_length"] = receive_bytes
    return [
        *options.items(),
        # Connections past max_connections are closed at once (the client sees "failed to
        # connect": never sent, safe to send elsewhere); one with no call for
        # connection_idle_ms is closed (clients reconnect when they next call).
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        # A connection counts against that bound from its first byte, before its TLS
        # handshake: one that has not finished the handshake in 5 s is dropped, so idle
        # sockets from anyone cannot hold the bound (gRPC's default waits 120 s).
        ("grpc.server_handshake_timeout_ms", 5_000),
        ("grpc.max_connection_idle_ms", limits.connection_idle_ms),
        # gRPC itself cancels calls that wait for the application past 1,000 (CANCELLED: a
        # burst of 2,000 lost ~10%, outcome unknown to the caller). Let them reach the
        # node's own bound (kvstore.rpc.admission), which answers Overloaded at once;
        # gRPC's hard limit stays, higher, for what arrives faster than any handler runs.
        ("grpc.server.max_pending_requests", max(4 * limits.max_inflight_requests, 4_096)),
        (
            "grpc.server.max_pending_requests_hard_limit",
            max(8 * limits.max_inflight_requests, 8_192),
        ),
        # Clients and peers ping every 10 s to notice a dead end on their long-lived streams,
        # also while no data flows: take those pings (by default gRPC answers pings more often
        # than every 5 minutes without data with a GOAWAY, which cuts every stream of the
        # connection, calls in flight included), but no more often than every 5 s.
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


class GrpcServer:
    def __init__(
        self,
        kv: KVServicer,
        peer: PeerServicer,
        admin: AdminServicer,
        max_message_bytes: int,
        limits: Limits = DEFAULT_LIMITS,
        client_receive_bytes: int | None = None,
        guard: Guard | None = None,
    ) -> None:
        """`guard`: who may call what (kvstore.rpc.auth); None on a node without TLS."""

        def guarded(service: str, servicer: Any) -> Any:
            return (
                open_access(service, servicer) if guard is None else guard.wrap(service, servicer)
            )

        self._client = grpc.aio.server(
            options=server_options(max_message_bytes, limits, client_receive_bytes)
        )
        pb_grpc.add_KVServicer_to_server(guarded("KV", kv), self._client)
        self._cluster = grpc.aio.server(options=server_options(max_message_bytes, limits))
        pb_grpc.add_PeerServicer_to_server(guarded("Peer", peer), self._cluster)
        pb_grpc.add_AdminServicer_to_server(guarded("Admin", admin), self._cluster)
        self._client_health = HealthServicer()
        self._cluster_health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._client_health, self._client)
        health_pb2_grpc.add_HealthServicer_to_server(self._cluster_health, self._cluster)

    async def set_serving(self, clients: bool, peers: bool | None = None) -> None:
        """Probes (k8s readiness, docker HEALTHCHECK) pass once the node knows a ring and so
        can coordinate requests; before that it answers NOT_SERVING (the servicer's own
        default for "" is SERVING, which would be a lie while the node waits for its seeds).
        `clients`: the client port's services; `peers`: the cluster port's Peer service
        (default: as `clients`). Admin is SERVING from the start: see ADMIN_HEALTH."""
        peers = clients if peers is None else peers
        for health, names, serving in (
            (self._client_health, CLIENT_HEALTH, clients),
            (self._cluster_health, PEER_HEALTH, peers),
        ):
            for service in names:
                await health.set(service, _status(serving))
        await self._cluster_health.set(ADMIN_HEALTH, _status(True))

    async def start(
        self,
        client_listen: str,
        cluster_listen: str,
        client_credentials: grpc.ServerCredentials | None = None,
        cluster_credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        for server, listen, credentials in (
            (self._client, client_listen, client_credentials),
            (self._cluster, cluster_listen, cluster_credentials),
        ):
            if credentials is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, credentials)
            if port == 0:
                raise OSError(f"cannot listen on {listen}")
        await self._cluster.start()
        await self._client.start()

    async def stop(self, grace_s: float) -> None:
        # Every service of both ports NOT_SERVING, for probes that ask while it stops.
        await self._client_health.enter_graceful_shutdown()
        await self._cluster_health.enter_graceful_shutdown()
        # Clients first: requests in flight may still need the peers to finish.
        await self._client.stop(grace=grace_s)
        await self._cluster.stop(grace=grace_s)


def _status(serving: bool) -> Any:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )

"""The node's gRPC server: the three services, the standard health service, one port."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.limits import DEFAULT_LIMITS, Limits
from kvstore.rpc.peer import channel_options
from kvstore.rpc.servicers import AdminServicer, KVServicer, PeerServicer

# The names health is reported under: the whole server ("") and the client service.
_HEALTH_SERVICES = ("", "kvstore.KV")


def server_options(
    max_message_bytes: int, limits: Limits = DEFAULT_LIMITS
) -> list[tuple[str, int]]:
    return [
        *channel_options(max_message_bytes),
        # Connections past max_connections are closed at once (the client sees "failed to
        # connect": never sent, safe to send elsewhere); one with no call for
        # connection_idle_ms is closed (clients reconnect when they next call).
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
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
    ) -> None:
        self._server = grpc.aio.server(options=server_options(max_message_bytes, limits))
        pb_grpc.add_KVServicer_to_server(kv, self._server)
        pb_grpc.add_PeerServicer_to_server(peer, self._server)
        pb_grpc.add_AdminServicer_to_server(admin, self._server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    async def set_serving(self, serving: bool) -> None:
        """Probes (docker HEALTHCHECK, k8s readiness) pass once the node knows a ring and so
        can coordinate requests; before that it answers NOT_SERVING (the servicer's own
        default for the whole server is SERVING, which would be a lie while the node waits
        for its seeds)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in _HEALTH_SERVICES:
            await self._health.set(service, status)

    async def start(self, listen: str) -> None:
        if self._server.add_insecure_port(listen) == 0:
            raise OSError(f"cannot listen on {listen}")
        await self._server.start()

    async def stop(self, grace_s: float) -> None:
        await self._server.stop(grace=grace_s)

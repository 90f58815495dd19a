"""The metrics endpoint: `GET /metrics` over plain HTTP/1.1, served on the node's own event loop.

Not prometheus_client's threaded server: a scrape reads the node's counters and storage, which
belong to the event loop's thread. The endpoint is read-only and holds no keys or values, but it
faces the network, so every request is bounded (head size, time, connections at once)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# A scraper's request head (request line and headers) is a few hundred bytes.
MAX_HEAD_BYTES = 8 * 1024
# Time a client has to send its request head.
HEAD_TIMEOUT_S = 5.0
# Scrapes served at once; further connections are closed unanswered.
MAX_CONNECTIONS = 16


class MetricsServer:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), limit=MAX_HEAD_BYTES
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open <= MAX_CONNECTIONS:
                await asyncio.wait_for(self._answer(reader, writer), HEAD_TIMEOUT_S)
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a slow, oversized or broken request: nothing to answer
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = head.partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
        elif path not in (b"/metrics", b"/"):
            status, body, kind = "404 Not Found", b"see /metrics\n", "text/plain"
        else:
            status, body, kind = "200 OK", generate_latest(self._registry), CONTENT_TYPE_LATEST
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        if method != b"HEAD":
            writer.write(body)
        await writer.drain()

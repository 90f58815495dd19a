"""A TCP fault proxy: cut, heal or slow one directed network link without touching the nodes.

Nodes talk gRPC (HTTP/2 over TCP). In the local test backend node A dials peer B through a
link of its own (A->B), a listening socket here that forwards to B, so the harness can
partition or slow the path from A to B while both processes keep running unmodified. The
same module runs standalone (`python -m kvstore.chaos.proxy --listen ... --target ...`)
inside containers whose kernel lacks tc netem.

How faithful the faults are, and where they differ from a real network:

* A cut is a partition as closely as a user-space TCP proxy allows. Connections open on the
  link are aborted with a reset on both sides, and connections made while cut are accepted
  but held silently: nothing is connected upstream and whatever the client sends is read and
  thrown away, so its calls hang until their deadline, as they would behind a black hole.
  The difference: after a real partition the established connection stays "up" and gRPC
  notices only through call deadlines or keepalive pings (seconds later), while here the
  reset makes it notice at once and go reconnecting. Likewise a real partition leaves a new
  connection hanging in SYN, while here the TCP handshake completes and only the HTTP/2
  handshake hangs, so a client fails by its call deadline or its connect timeout (not by a
  TCP connect error). Tests that measure how long failure detection takes must keep this in
  mind; tests of what the system does once the peer is unreachable are unaffected.
* On restore the held connections are aborted, so clients reconnect and get through.
* A delay holds every chunk read from one side for delay_ms (+ a uniform 0..jitter_ms) after
  it was read, then writes it to the other side. Chunks leave in the order they were read:
  jitter varies the delay but never reorders bytes, as TCP would never deliver them out of
  order either. There is no bandwidth limit and no loss model.

Everything is bounded: connections per link, bytes queued per direction (when the queue is
full the proxy stops reading that side, so TCP flow control pushes back on the sender),
upstream connect time, and how long a public method waits for the loop thread.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import random
import signal
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "MAX_DELAY_MS",
    "FaultProxy",
    "LinkState",
    "ProxyError",
    "main",
    "parse_address",
]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_DELAY_MS = 60_000
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 5.0
# How long a public method waits for the loop thread to do its part: the loop only does
# quick bookkeeping (or binds a socket), so running out of this means the loop is stuck.
CALL_TIMEOUT = 10.0
JOIN_TIMEOUT = 10.0

# SO_LINGER on with a zero timeout: close() then sends a reset instead of a FIN, which is
# what "the connection was aborted" looks like to the peer.
_LINGER_RESET = struct.pack("ii", 1, 0)

_T = TypeVar("_T")
_thread_ids = itertools.count(1)


class ProxyError(Exception):
    """A bad argument, an unknown or duplicate link, or a proxy that is closed."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """A snapshot of one link: its settings and counters since it was added."""

    name: str
    target: str  # "host:port" it forwards to
    listen: str  # "host:port" it listens on
    cut: bool
    delay_ms: int
    jitter_ms: int
    open_connections: int  # forwarding (or connecting upstream) now
    held_connections: int  # accepted while cut, held silently now
    accepted_connections: int  # every connection accepted under the limit
    refused_connections: int  # beyond max_connections: closed at once
    upstream_failures: int  # the target refused or did not answer in time
    aborted_connections: int  # aborted by cut (open ones) or restore (held ones)
    bytes_to_target: int
    bytes_from_target: int
    bytes_discarded: int  # sent by held clients, read and dropped


def parse_address(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split "HOST:PORT" ("[v6]:PORT" too); ProxyError if it is not one."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ProxyError(f"not HOST:PORT: {text!r}")
    port = int(port_text)
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ProxyError(f"port out of range in {text!r}")
    return host, port


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort a connection so that the peer sees a reset, not a clean end of stream."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Fails harmlessly when the socket is already closed.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class _ChunkQueue:
    """The chunks read from one side and not yet written to the other, bounded in bytes.

    One reader task puts, one writer task gets; the writer holds each chunk until its
    deadline, so chunks leave in the order they arrived whatever their deadlines.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: deque[tuple[float, bytes] | None] = deque()
        self._bytes = 0
        self._changed = asyncio.Condition()

    async def put(self, deadline: float, chunk: bytes) -> None:
        async with self._changed:
            # Waiting here is the backpressure: the reader stops reading, the socket's
            # receive buffer fills, and TCP flow control slows the sender down.
            await self._changed.wait_for(lambda: self._bytes < self._max_bytes)
            self._items.append((deadline, chunk))
            self._bytes += len(chunk)
            self._changed.notify_all()

    async def put_eof(self) -> None:
        async with self._changed:
            self._items.append(None)
            self._changed.notify_all()

    async def get(self) -> tuple[float, bytes] | None:
        """The next chunk and its deadline, or None at the end of the stream."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            if item is not None:
                self._bytes -= len(item[1])
            self._changed.notify_all()
            return item


@dataclass(eq=False)
class _Conn:
    """One accepted client connection and (once connected) its upstream."""

    client: asyncio.StreamWriter
    task: asyncio.Task[Any] | None
    held: bool
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)
        # Stop its tasks too: they would otherwise go on writing into aborted transports.
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


@dataclass(eq=False)
class _Link:
    name: str
    target_host: str
    target_port: int
    listen: str = ""
    server: asyncio.Server | None = None
    cut: bool = False
    delay_ms: int = 0
    jitter_ms: int = 0
    conns: set[_Conn] = field(default_factory=set)
    accepted: int = 0
    refused: int = 0
    upstream_failures: int = 0
    aborted: int = 0
    bytes_to_target: int = 0
    bytes_from_target: int = 0
    bytes_discarded: int = 0

    def state(self) -> LinkState:
        held = sum(1 for conn in self.conns if conn.held)
        return LinkState(
            name=self.name,
            target=_format_address(self.target_host, self.target_port),
            listen=self.listen,
            cut=self.cut,
            delay_ms=self.delay_ms,
            jitter_ms=self.jitter_ms,
            open_connections=len(self.conns) - held,
            held_connections=held,
            accepted_connections=self.accepted,
            refused_connections=self.refused,
            upstream_failures=self.upstream_failures,
            aborted_connections=self.aborted,
            bytes_to_target=self.bytes_to_target,
            bytes_from_target=self.bytes_from_target,
            bytes_discarded=self.bytes_discarded,
        )


class FaultProxy:
    """Links, each a listening socket forwarding to one target, served by an asyncio loop in
    one background daemon thread.

    All public methods are thread-safe: every piece of state is touched only on the loop
    thread, and the methods hand their work to it and wait for the answer (bounded by
    CALL_TIMEOUT). They must not be called from the loop thread itself.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if max_connections < 1 or max_queue_bytes < 1 or not connect_timeout > 0:
            raise ProxyError("max_connections, max_queue_bytes and connect_timeout must be > 0")
        self._host = host
        self._max_connections = max_connections
        self._max_queue_bytes = max_queue_bytes
        self._connect_timeout = connect_timeout
        self._random = random.Random()
        self._links: dict[str, _Link] = {}
        self._shutting_down = False
        # Guards only the open/closed transition, so that no call is handed to a loop that
        # is going away; all the proxy's state lives on the loop thread.
        self._lifecycle = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"fault-proxy-{next(_thread_ids)}", daemon=True
        )
        self._thread.start()
        if not ready.wait(CALL_TIMEOUT) or self._loop is None:
            self._closed = True
            raise ProxyError("the proxy's event loop did not start")

    # ---- public API (any thread but the loop's) ----

    def add_link(self, name: str, target: str, listen_port: int = 0) -> str:
        """Listen on host:listen_port (0: any free port) and forward to target "HOST:PORT".

        Returns the "host:port" it listens on.
        """
        if not isinstance(name, str) or not name:
            raise ProxyError(f"a link needs a non-empty name, not {name!r}")
        target_host, target_port = parse_address(target)
        if isinstance(listen_port, bool) or not 0 <= listen_port <= 65535:
            raise ProxyError(f"listen port out of range: {listen_port!r}")
        return self._call(lambda: self._add_link(name, target_host, target_port, listen_port))

    def cut(self, name: str) -> None:
        """Partition the link: abort its open connections and hold new ones silently."""
        self._call(lambda: self._cut(name))

    def restore(self, name: str) -> None:
        """Heal a cut: abort the held connections, so that clients reconnect and get through."""
        self._call(lambda: self._restore(name))

    def set_delay(self, name: str, delay_ms: int, jitter_ms: int = 0) -> None:
        """Hold each chunk delay_ms + uniform(0, jitter_ms) before forwarding it (0, 0: none).

        Applies to chunks read from now on, on open and new connections alike.
        """
        for label, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 0 <= value <= MAX_DELAY_MS
            ):
                raise ProxyError(f"{label} must be an int in 0..{MAX_DELAY_MS}, not {value!r}")
        self._call(lambda: self._set_delay(name, delay_ms, jitter_ms))

    def links(self) -> dict[str, LinkState]:
        """A snapshot of every link."""
        return self._call(self._snapshot)

    def close(self) -> None:
        """Close every socket and stop the loop thread. Idempotent."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is already gone
                    loop.call_soon_threadsafe(stop.set)
        if threading.current_thread() is not self._thread:
            self._thread.join(JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning("fault proxy thread did not stop within %.0f s", JOIN_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- handing work to the loop ----

    def _call(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        if threading.current_thread() is self._thread:
            # Waiting for the loop from the loop would deadlock until the timeout.
            raise ProxyError("FaultProxy methods must not be called from its own loop thread")
        with self._lifecycle:
            if self._closed or self._loop is None:
                raise ProxyError("the proxy is closed")
            coro = make()
            try:
                future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            except RuntimeError as exc:  # the loop died under us
                coro.close()
                raise ProxyError("the proxy's event loop is not running") from exc
        try:
            return future.result(CALL_TIMEOUT)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise ProxyError(f"the proxy's event loop did not answer in {CALL_TIMEOUT} s") from exc
        except concurrent.futures.CancelledError as exc:  # closed while waiting
            raise ProxyError("the proxy was closed") from exc

    def _link(self, name: str) -> _Link:
        try:
            return self._links[name]
        except KeyError:
            raise ProxyError(f"no link named {name!r}") from None

    # ---- on the loop thread ----

    def _run(self, ready: threading.Event) -> None:
        try:
            # asyncio.run cancels and awaits whatever is left when _serve returns, shuts
            # down async generators and closes the loop: nothing is left pending.
            asyncio.run(self._serve(ready))
        except Exception:
            logger.exception("fault proxy loop failed")
        finally:
            ready.set()  # never leave __init__ waiting if the loop failed to start

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._shutting_down = True
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            if link.server is not None:
                link.server.close()
        conns = [conn for link in links for conn in link.conns]
        for conn in conns:
            conn.abort()
        tasks = [conn.task for conn in conns if conn.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        for link in links:
            if link.server is not None:
                await link.server.wait_closed()
        # Let the aborted transports run their connection_lost callbacks (which close the
        # sockets) before the loop goes away.
        for _ in range(3):
            await asyncio.sleep(0)

    async def _add_link(
        self, name: str, target_host: str, target_port: int, listen_port: int
    ) -> str:
        if name in self._links:
            raise ProxyError(f"a link named {name!r} exists already")
        link = _Link(name, target_host, target_port)

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Nobody awaits this task, and only the proxy cancels it (cut, restore, close),
            # so it ends normally: Python 3.11's streams log a cancelled handler as an error.
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept(link, reader, writer)

        try:
            server = await asyncio.start_server(accept, self._host, listen_port)
        except OSError as exc:
            raise ProxyError(
                f"cannot listen on {_format_address(self._host, listen_port)}: {exc}"
            ) from exc
        port = server.sockets[0].getsockname()[1]
        link.server = server
        link.listen = _format_address(self._host, port)
        self._links[name] = link
        return link.listen

    async def _cut(self, name: str) -> None:
        link = self._link(name)
        link.cut = True
        for conn in [conn for conn in link.conns if not conn.held]:
            link.conns.discard(conn)  # gone from the counts at once, not when its task ends
            link.aborted += 1
            conn.abort()

    async def _restore(self, name: str) -> None:
        link = self._link(name)
        link.cut = False
        for conn in [conn for conn in link.conns if conn.held]:
            link.conns.discard(conn)
            link.aborted += 1
            conn.abort()

    async def _set_delay(self, name: str, delay_ms: int, jitter_ms: int) -> None:
        link = self._link(name)
        link.delay_ms = delay_ms
        link.jitter_ms = jitter_ms

    async def _snapshot(self) -> dict[str, LinkState]:
        return {name: link.state() for name, link in self._links.items()}

    async def _accept(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._shutting_down:  # accepted just before the listening socket closed
            _reset(writer)
            return
        if len(link.conns) >= self._max_connections:
            link.refused += 1
            _reset(writer)
            return
        conn = _Conn(client=writer, task=asyncio.current_task(), held=link.cut)
        link.conns.add(conn)
        link.accepted += 1
        try:
            if conn.held:
                await self._hold(link, reader)
            else:
                await self._forward(link, conn, reader)
        except OSError:  # resets and broken pipes are how connections end here
            pass
        except Exception:
            logger.exception("fault proxy link %s: connection failed", link.name)
        finally:
            link.conns.discard(conn)
            # A no-op on aborted transports; otherwise flushes what is buffered, then FIN.
            writer.close()
            if conn.upstream is not None:
                conn.upstream.close()

    async def _hold(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Read and drop whatever a client sends while the link is cut, until it gives up
        or restore aborts it: a black hole, but one that never fills up."""
        while chunk := await reader.read(CHUNK_BYTES):
            link.bytes_discarded += len(chunk)

    async def _forward(self, link: _Link, conn: _Conn, reader: asyncio.StreamReader) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    link.target_host, link.target_port
                )
        except OSError:  # refused, unreachable, or timed out (TimeoutError is an OSError)
            link.upstream_failures += 1
            return  # _accept closes the client
        conn.upstream = up_writer
        pumps = [
            asyncio.create_task(self._pump(link, reader, up_writer, to_target=True)),
            asyncio.create_task(self._pump(link, up_reader, conn.client, to_target=False)),
        ]
        try:
            # Either side closing ends the connection (no half-close: gRPC does not need it).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self,
        link: _Link,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        to_target: bool,
    ) -> None:
        """Copy one direction: a reader task fills a bounded queue, this task drains it."""
        queue = _ChunkQueue(self._max_queue_bytes)
        reader = asyncio.create_task(self._read_chunks(link, src, queue))
        try:
            await self._write_chunks(link, queue, dst, to_target=to_target)
        except OSError:
            pass
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_chunks(
        self, link: _Link, src: asyncio.StreamReader, queue: _ChunkQueue
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await src.read(CHUNK_BYTES):
                # The delay is drawn when the chunk is read, from the link's settings now:
                # set_delay reaches open connections at their next chunk.
                await queue.put(loop.time() + self._delay_seconds(link), chunk)
        except OSError:  # a reset ends the stream like an EOF
            pass
        await queue.put_eof()

    async def _write_chunks(
        self, link: _Link, queue: _ChunkQueue, dst: asyncio.StreamWriter, *, to_target: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            deadline, chunk = item
            wait = deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            dst.write(chunk)
            if to_target:
                link.bytes_to_target += len(chunk)
            else:
                link.bytes_from_target += len(chunk)
            await dst.drain()

    def _delay_seconds(self, link: _Link) -> float:
        delay = float(link.delay_ms)
        if link.jitter_ms:
            delay += self._random.uniform(0.0, float(link.jitter_ms))
        return delay / 1000.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one link until SIGTERM or SIGINT; SIGUSR1 cuts it, SIGUSR2 restores it."""
    parser = argparse.ArgumentParser(
        prog="python -m kvstore.chaos.proxy",
        description="A TCP proxy that can cut or slow the one link it serves.",
        epilog="Signals: SIGUSR1 cuts the link, SIGUSR2 restores it, SIGTERM/SIGINT stop.",
    )
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where to listen")
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="where to forward")
    parser.add_argument("--delay-ms", type=int, default=0, help="delay per direction")
    parser.add_argument("--jitter-ms", type=int, default=0, help="extra uniform random delay")
    args = parser.parse_args(argv)
    try:
        listen_host, listen_port = parse_address(args.listen, allow_port_zero=True)
        parse_address(args.target)
    except ProxyError as exc:
        parser.error(str(exc))
    for label, value in (("--delay-ms", args.delay_ms), ("--jitter-ms", args.jitter_ms)):
        if not 0 <= value <= MAX_DELAY_MS:
            parser.error(f"{label} must be in 0..{MAX_DELAY_MS}")

    # Signals are taken synchronously with sigwait rather than by handlers, so that cutting
    # the link never runs inside a handler that interrupted the main thread at a bad moment.
    # They are blocked before the loop thread starts, which inherits the mask.
    signals = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        with FaultProxy(listen_host) as proxy:
            try:
                listen = proxy.add_link("link", args.target, listen_port)
                proxy.set_delay("link", args.delay_ms, args.jitter_ms)
            except ProxyError as exc:
                print(f"proxy: {exc}", file=sys.stderr)
                return 1
            print(f"listening on {listen}, forwarding to {args.target}", flush=True)
            while (signum := signal.sigwait(signals)) not in (signal.SIGTERM, signal.SIGINT):
                if signum == signal.SIGUSR1:
                    proxy.cut("link")
                    print("cut", flush=True)
                else:
                    proxy.restore("link")
                    print("restored", flush=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())

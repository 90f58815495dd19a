"""The TCP fault proxy (kvstore.chaos.proxy): forwarding, cut/restore, delay, limits, shutdown.

Everything runs on 127.0.0.1 against a small threaded echo server (and, once, a real gRPC
server). Every wait is bounded by a deadline; timing checks are lower bounds only.
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kvstore.chaos.proxy import FaultProxy, LinkState, ProxyError, main
from kvstore.rpc.peer import channel_options

ROOT = Path(__file__).resolve().parents[2]
WAIT = 5.0  # the bound on every "this should happen soon" wait


# ---- helpers ----


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, EchoServer)
        with server.lock:
            server.connections += 1
        self.request.settimeout(10.0)  # bounds server_close, which joins this thread
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True  # server_close joins the handler threads: no leaked sockets
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.connections = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def connection_count(self) -> int:
        with self.lock:
            return self.connections


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def connect(listen: str, timeout: float = WAIT) -> socket.socket:
    return socket.create_connection(address(listen), timeout=timeout)


def recv_exact(sock: socket.socket, size: int, timeout: float = WAIT) -> bytes:
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    got = 0
    while got < size:
        left = deadline - time.monotonic()
        assert left > 0, f"received {got} of {size} bytes in {timeout} s"
        sock.settimeout(left)
        part = sock.recv(min(size - got, 1 << 20))
        assert part, f"connection closed after {got} of {size} bytes"
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def echo_once(sock: socket.socket, payload: bytes = b"ping") -> None:
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload


def assert_closed_by_peer(sock: socket.socket, timeout: float = WAIT) -> None:
    """The proxy closed or reset the connection: recv sees EOF or a reset, not a timeout."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return
    except (ConnectionResetError, ConnectionAbortedError):
        return
    pytest.fail("the connection stayed open")


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def send_in_thread(sock: socket.socket, payload: bytes) -> threading.Thread:
    """Send while the caller receives: an echo of a large payload would otherwise fill
    both directions' buffers and deadlock."""
    thread = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    thread.start()
    return thread


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---- fixtures ----


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_loop_errors() -> Iterator[None]:
    """Fail on anything the proxy's loop complains about: "Task was destroyed but it is
    pending", "Task exception was never retrieved", writes into lost transports, ..."""
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    try:
        yield
        gc.collect()  # destroyed-pending-task reports come from finalizers
    finally:
        root.removeHandler(collect)
    bad = [
        f"{r.name}: {r.getMessage()}"
        for r in collect.records
        if r.levelno >= logging.ERROR
        or (r.name == "asyncio" and not r.getMessage().startswith("Executing "))
    ]
    assert not bad


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy() as fault_proxy:
        yield fault_proxy


# ---- forwarding ----


def test_bytes_pass_through_both_ways(echo: EchoServer, proxy: FaultProxy) -> None:
    listen = proxy.add_link("a->b", echo.target)
    assert listen.startswith("127.0.0.1:")
    payload = os.urandom(1 << 20)
    with connect(listen) as client:
        echo_once(client, b"hello")
        sender = send_in_thread(client, payload)
        assert recv_exact(client, len(payload)) == payload
        sender.join(WAIT)
        state = proxy.links()["a->b"]
        assert state.open_connections == 1
        assert state.bytes_to_target == state.bytes_from_target == len(payload) + 5
    assert echo.connection_count() == 1
    wait_until(lambda: proxy.links()["a->b"].open_connections == 0)


def test_client_close_closes_upstream_and_target_close_closes_client(
    echo: EchoServer, proxy: FaultProxy
) -> None:
    listen = proxy.add_link("a->b", echo.target)
    for _ in range(3):
        with connect(listen) as client:
            echo_once(client)
    wait_until(lambda: proxy.links()["a->b"].open_connections == 0)
    assert proxy.links()["a->b"].accepted_connections == 3


def test_target_refusing_closes_the_client(proxy: FaultProxy) -> None:
    listen = proxy.add_link("a->nobody", f"127.0.0.1:{free_port()}")
    with connect(listen) as client:
        assert_closed_by_peer(client)
    wait_until(lambda: proxy.links()["a->nobody"].upstream_failures == 1)


def test_connections_beyond_the_limit_are_closed_and_counted(echo: EchoServer) -> None:
    with FaultProxy(max_connections=2) as proxy:
        listen = proxy.add_link("a->b", echo.target)
        with connect(listen) as first, connect(listen) as second:
            echo_once(first)
            echo_once(second)
            try:
                third = connect(listen)
            except ConnectionResetError:
                pass  # reset so fast that connect() saw it (it checks SO_ERROR after polling)
            else:
                with third:
                    assert_closed_by_peer(third)
            assert proxy.links()["a->b"].refused_connections == 1
        wait_until(lambda: proxy.links()["a->b"].open_connections == 0)
        with connect(listen) as again:
            echo_once(again)


def test_a_small_queue_bound_still_delivers_everything(echo: EchoServer) -> None:
    # The per-direction queue fills up all the time here: backpressure, not loss.
    with FaultProxy(max_queue_bytes=16 * 1024) as proxy:
        listen = proxy.add_link("a->b", echo.target)
        proxy.set_delay("a->b", 1)
        payload = os.urandom(512 * 1024)
        with connect(listen) as client:
            sender = send_in_thread(client, payload)
            assert recv_exact(client, len(payload)) == payload
            sender.join(WAIT)


# ---- cut and restore ----


def test_cut_aborts_open_connections_and_holds_new_ones(
    echo: EchoServer, proxy: FaultProxy
) -> None:
    listen = proxy.add_link("a->b", echo.target)
    with connect(listen) as client:
        echo_once(client)
        proxy.cut("a->b")
        assert_closed_by_peer(client)
    state = proxy.links()["a->b"]
    assert state.cut and state.aborted_connections == 1 and state.open_connections == 0
    upstream_before = echo.connection_count()

    with connect(listen) as held:  # accepted...
        held.sendall(b"ping")
        held.settimeout(0.3)
        with pytest.raises(TimeoutError):  # ...but never answered
            held.recv(1)
        # What a held client sends is read and dropped, so it never blocks.
        held.settimeout(WAIT)
        held.sendall(b"x" * (1 << 20))
        wait_until(lambda: proxy.links()["a->b"].bytes_discarded == 4 + (1 << 20))
        assert proxy.links()["a->b"].held_connections == 1
        assert echo.connection_count() == upstream_before  # nothing connected upstream

        proxy.restore("a->b")
        assert_closed_by_peer(held)  # a held connection is aborted, so the client retries
    state = proxy.links()["a->b"]
    assert not state.cut and state.held_connections == 0 and state.aborted_connections == 2
    with connect(listen) as client:
        echo_once(client)


def test_cut_and_restore_are_idempotent_and_per_link(echo: EchoServer, proxy: FaultProxy) -> None:
    one = proxy.add_link("a->b", echo.target)
    other = proxy.add_link("b->a", echo.target)
    proxy.restore("a->b")  # not cut: nothing to do
    proxy.cut("a->b")
    proxy.cut("a->b")
    with connect(other) as client:
        echo_once(client)  # the other link is untouched
    proxy.restore("a->b")
    proxy.restore("a->b")
    with connect(one) as client:
        echo_once(client)


# ---- delay ----


def test_delay_adds_at_least_the_delay_each_way(echo: EchoServer, proxy: FaultProxy) -> None:
    listen = proxy.add_link("a->b", echo.target)
    with connect(listen) as already_open:
        echo_once(already_open)
        proxy.set_delay("a->b", 100)
        with connect(listen) as new:
            for client in (already_open, new):  # open and new connections alike
                start = time.monotonic()
                echo_once(client)
                # Request and reply are each held 100 ms; 5 ms slack for clock granularity.
                assert time.monotonic() - start >= 0.2 - 0.005
    state = proxy.links()["a->b"]
    assert (state.delay_ms, state.jitter_ms) == (100, 0)
    proxy.set_delay("a->b", 0)
    assert proxy.links()["a->b"].delay_ms == 0


def test_jitter_never_reorders(echo: EchoServer, proxy: FaultProxy) -> None:
    listen = proxy.add_link("a->b", echo.target)
    proxy.set_delay("a->b", 1, jitter_ms=20)
    count, size = 200, 64

    def chunk(i: int) -> bytes:
        return struct.pack(">I", i) * (size // 4)

    def send_chunks(sock: socket.socket) -> None:
        for i in range(count):
            sock.sendall(chunk(i))
            time.sleep(0.001)  # separate reads at the proxy, each with its own jitter

    with connect(listen) as client:
        sender = threading.Thread(target=send_chunks, args=(client,), daemon=True)
        sender.start()
        received = recv_exact(client, count * size, timeout=10.0)
        sender.join(WAIT)
    assert received == b"".join(chunk(i) for i in range(count))


# ---- bad arguments ----


def test_bad_arguments_raise_and_change_nothing(echo: EchoServer, proxy: FaultProxy) -> None:
    listen = proxy.add_link("a->b", echo.target)
    before = proxy.links()
    bad_calls: list[Callable[[], object]] = [
        lambda: proxy.cut("nope"),
        lambda: proxy.restore("nope"),
        lambda: proxy.set_delay("nope", 10),
        lambda: proxy.add_link("a->b", echo.target),  # duplicate
        lambda: proxy.add_link("", echo.target),
        lambda: proxy.add_link("x", echo.target, listen_port=-1),
        lambda: proxy.add_link("x", echo.target, listen_port=65536),
        lambda: proxy.add_link("x", echo.target, listen_port=address(listen)[1]),  # in use
        lambda: proxy.set_delay("a->b", -1),
        lambda: proxy.set_delay("a->b", 60_001),
        lambda: proxy.set_delay("a->b", 10, jitter_ms=-1),
        lambda: proxy.set_delay("a->b", 10, jitter_ms=60_001),
        lambda: proxy.set_delay("a->b", 1.5),  # type: ignore[arg-type]
    ]
    bad_calls += [
        lambda target=target: proxy.add_link("x", target)  # type: ignore[misc]
        for target in (
            "",
            "127.0.0.1",
            "127.0.0.1:",
            ":80",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:http",
            "127.0.0.1:-5",
        )
    ]
    for call in bad_calls:
        with pytest.raises(ProxyError):
            call()
    assert proxy.links() == before
    with connect(listen) as client:
        echo_once(client)


# ---- shutdown ----


def proxy_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fault-proxy")}


def test_close_is_idempotent_ends_the_thread_and_closes_every_socket(echo: EchoServer) -> None:
    before = proxy_threads()
    proxy = FaultProxy()
    (thread,) = proxy_threads() - before
    listen = proxy.add_link("a->b", echo.target)
    held_listen = proxy.add_link("b->a", echo.target)
    proxy.cut("b->a")
    proxy.set_delay("a->b", 50)
    with connect(listen) as client, connect(held_listen) as held:
        client.sendall(b"in flight")  # still queued in the delay when close comes
        wait_until(lambda: proxy.links()["b->a"].held_connections == 1)
        proxy.close()
        proxy.close()
        assert not thread.is_alive()
        assert_closed_by_peer(client)
        assert_closed_by_peer(held)
    with pytest.raises(ConnectionRefusedError):
        connect(listen).close()
    for call in (proxy.links, lambda: proxy.cut("a->b"), lambda: proxy.add_link("c", listen)):
        with pytest.raises(ProxyError):
            call()


def test_context_manager_closes(echo: EchoServer) -> None:
    before = proxy_threads()
    with FaultProxy() as proxy:
        proxy.add_link("a->b", echo.target)
    assert proxy_threads() == before
    with pytest.raises(ProxyError):
        proxy.links()


# ---- a real gRPC client and server through the proxy ----


def test_grpc_call_fails_while_cut_and_recovers_after_restore() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    options = [
        *channel_options(4 << 20),  # the nodes' own settings (short reconnect backoff)
        ("grpc.use_local_subchannel_pool", 1),  # no connection shared with other tests
        ("grpc.enable_http_proxy", 0),  # never through an http_proxy from the environment
    ]
    try:
        with FaultProxy() as proxy:
            listen = proxy.add_link("client->server", f"127.0.0.1:{port}")
            with grpc.insecure_channel(listen, options=options) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="")
                serving = health_pb2.HealthCheckResponse.SERVING
                assert stub.Check(request, timeout=WAIT).status == serving

                proxy.cut("client->server")
                with pytest.raises(grpc.RpcError) as failed:
                    stub.Check(request, timeout=1)
                assert failed.value.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )

                proxy.restore("client->server")
                reply = stub.Check(request, wait_for_ready=True, timeout=10)
                assert reply.status == serving
    finally:
        server.stop(None).wait(WAIT)


# ---- the standalone command ----


def test_main_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--listen", "nope", "--target", "127.0.0.1:1"],
        ["--listen", "127.0.0.1:0", "--target", "127.0.0.1"],
        ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--delay-ms", "-1"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    capsys.readouterr()


def test_standalone_proxy_forwards_cuts_on_sigusr1_and_stops_on_sigterm(
    echo: EchoServer,
) -> None:
    argv = [sys.executable, "-m", "kvstore.chaos.proxy", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*argv, "--target", echo.target, "--delay-ms", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)

            def next_line() -> str:
                assert selector.select(timeout=10.0), "the proxy printed nothing"
                assert proc.stdout is not None
                return proc.stdout.readline()

            line = next_line()
            assert line.startswith("listening on 127.0.0.1:"), line
            listen = line.split()[2].rstrip(",")
            with connect(listen) as client:
                echo_once(client)
                proc.send_signal(signal.SIGUSR1)
                assert next_line() == "cut\n"
                assert_closed_by_peer(client)
            proc.send_signal(signal.SIGUSR2)
            assert next_line() == "restored\n"
            with connect(listen) as client:
                echo_once(client)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10.0)
        proc.stdout.close()


def test_link_state_is_a_plain_snapshot(echo: EchoServer, proxy: FaultProxy) -> None:
    proxy.add_link("a->b", echo.target)
    state = proxy.links()["a->b"]
    assert isinstance(state, LinkState)
    assert state.target == echo.target and not state.cut
    proxy.cut("a->b")
    assert not state.cut  # an earlier snapshot does not change

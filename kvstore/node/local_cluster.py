"""Node processes on this machine: what `kvstore local`, the integration tests and (later) the
chaos harness start, kill, pause and restart. Every process is tracked by its own pid and
only those are ever signalled."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from kvstore.config import CLIENT_PORT_OFFSET, METRICS_PORT_OFFSET
from kvstore.security import ClusterMaterial, write_cluster_material

# Client certificates a secure local cluster makes: one per role, for tests and operators.
_CLIENTS: Mapping[str, str] = MappingProxyType(
    {"admin": "admin", "writer": "write", "reader": "read"}
)

READY_MARK = "ready on"


# Listening ports are picked below Linux's ephemeral range (32768-60999 by default): a port
# the kernel hands out for an outgoing connection may be taken again by the next one, and a
# node restarted on its port (kill -9, then start) found it held by a client's connection.
_LISTEN_PORTS = range(20_000, 32_000)
_PICK_TRIES = 1_000


def free_ports(count: int, host: str = "127.0.0.1", exclude: Collection[int] = ()) -> list[int]:
    """Distinct ports free to listen on now, picked at random outside the ephemeral range, so
    parallel runs, leftovers and outgoing connections do not collide with them; none of
    `exclude` (ports picked before and not yet listened on: free again until then)."""
    sockets: list[socket.socket] = []
    rng = random.Random()
    try:
        for _ in range(_PICK_TRIES):
            if len(sockets) == count:
                break
            port = rng.choice(_LISTEN_PORTS)
            if port in exclude:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        if len(sockets) < count:
            raise ClusterError(f"no {count} free ports in {_LISTEN_PORTS}")
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ClusterError(RuntimeError):
    """A node process did not start or stop as expected."""


@dataclass
class LocalNode:
    index: int
    node_id: str
    # The cluster address (peers, operators; the node's name in the ring) and the client one.
    address: str
    client_address: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Where this start's output begins in the (appended) log: readiness is looked for after it.
    log_offset: int = 0
    # The metrics endpoint (GET /metrics).
    metrics_address: str = ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """`count` nodes on `host`, on ports base_port.. (or the given `ports`), data under
    data_dir/node-<i>, output in data_dir/node-<i>.log."""

    def __init__(
        self,
        count: int,
        data_dir: str | os.PathLike[str],
        base_port: int = 7101,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ports: list[int] | None = None,
        founders: int | None = None,
        node_args: Callable[[int], Sequence[str]] | None = None,
        client_ports: list[int] | None = None,
        tls_dir: str | os.PathLike[str] | None = None,
        clients: Mapping[str, str] = _CLIENTS,
        avoid_ports: Collection[int] = (),
    ) -> None:
        """`tls_dir`: run secure, with the CA, certificates and tokens kept there (made on
        first use, reused after: several clusters may share one CA); None: plaintext on
        loopback. `clients`: the client certificates to make (name -> role). `avoid_ports`:
        ports the caller picked for something else (not yet listened on), never picked here."""
        if not 1 <= count <= 64:
            raise ClusterError("a local cluster has 1..64 nodes")
        if ports:
            # Beside ports picked at random, ports picked at random too, none of them one
            # already given: gRPC listens with SO_REUSEPORT, so two nodes given one port would
            # both start and share its connections (an Admin call meeting a client port).
            taken = {*ports, *(client_ports or []), *avoid_ports}
            picked = free_ports(count if client_ports else 2 * count, host, exclude=taken)
            metrics_ports = picked[:count]
            client_ports = client_ports or picked[count:]
        else:
            # Beside a fixed base port, the config's default offsets (what a user types).
            metrics_ports = [base_port + METRICS_PORT_OFFSET + i for i in range(count)]
            if client_ports is None:
                client_ports = [base_port + CLIENT_PORT_OFFSET + i for i in range(count)]
        ports = ports or [base_port + i for i in range(count)]
        if len(ports) != count or len(client_ports) != count:
            raise ClusterError(f"{count} nodes need {count} ports of each kind")
        # The first `founders` nodes are every node's seeds and start the ring; the others
        # start as standby members, to be joined (`kvstore join`).
        self.founders = count if founders is None else founders
        if not 1 <= self.founders <= count:
            raise ClusterError(f"founders must be in 1..{count}")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.extra_args = extra_args
        # Arguments for one node only (by index), e.g. its own routes to its peers.
        self.node_args = node_args
        self.env = env
        self.nodes = [
            LocalNode(
                index=i,
                node_id=f"node-{i}",
                address=f"{host}:{ports[i]}",
                client_address=f"{host}:{client_ports[i]}",
                data_dir=self.data_dir / f"node-{i}",
                log_path=self.data_dir / f"node-{i}.log",
                metrics_address=f"{host}:{metrics_ports[i]}",
            )
            for i in range(count)
        ]
        self.tls: ClusterMaterial | None = None
        # role -> token, for clients of this local cluster.
        self.tokens: dict[str, str] = {}
        if tls_dir is not None:
            self.tls, self.tokens = local_material(tls_dir, self.addresses, host, clients)

    @property
    def addresses(self) -> list[str]:
        """The nodes' cluster addresses: their names in the ring, where admin calls go."""
        return [n.address for n in self.nodes]

    @property
    def client_addresses(self) -> list[str]:
        return [n.client_address for n in self.nodes]

    def client_of(self, address: str) -> str:
        """The client address of the node named `address` (its cluster address)."""
        return next(n.client_address for n in self.nodes if n.address == address)

    def clients_of(self, addresses: Sequence[str]) -> list[str]:
        return [self.client_of(a) for a in addresses]

    @property
    def seeds(self) -> str:
        """The founders' client addresses: what a client is given."""
        return ",".join(self.client_addresses[: self.founders])

    @property
    def cluster_seeds(self) -> str:
        """The founders' cluster addresses: every node's --seeds."""
        return ",".join(self.addresses[: self.founders])

    def command(self, node: LocalNode) -> list[str]:
        return [
            sys.executable, "-m", "kvstore.cli.main", "serve",
            "--node-id", node.node_id,
            "--listen", node.address,
            "--client-listen", node.client_address,
            "--metrics-listen", node.metrics_address,
            "--data-dir", str(node.data_dir),
            "--seeds", self.cluster_seeds,
            *self._tls_args(node),
            *self.extra_args,
            *(self.node_args(node.index) if self.node_args else ()),
        ]  # fmt: skip

    def _tls_args(self, node: LocalNode) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        return [
            "--tls-ca", str(tls.ca),
            "--tls-cert", str(tls.node_cert(node.address)),
            "--tls-key", str(tls.node_key(node.address)),
            "--auth-tokens", str(tls.tokens_file),
        ]  # fmt: skip

    def client_credentials(self, name: str = "admin", role: str = "admin") -> dict[str, str]:
        """For a client or the CLI, as KVSTORE_* settings: the CA, the client certificate
        `name` (for admin verbs on the cluster port) and the token of `role` (for the
        client port). Empty without TLS."""
        if self.tls is None:
            return {}
        return credentials_env(self.tls, self.tokens, name, role)

    def start(self, timeout: float = 30.0) -> None:
        """Start every node (founders and standby ones) and wait until each is serving."""
        for node in self.nodes:
            self.start_node(node.index, wait=False)
        for node in self.nodes:
            self.wait_ready(node.index, timeout)

    def start_node(self, index: int, wait: bool = True, timeout: float = 30.0) -> LocalNode:
        node = self.nodes[index]
        if node.running:
            raise ClusterError(f"{node.node_id} is already running (pid {node.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        # The node must not inherit settings meant for someone else's node.
        env = {k: v for k, v in env.items() if not k.startswith("KVSTORE_")}
        with open(node.log_path, "ab") as log:
            node.log_offset = log.tell()
            node.process = subprocess.Popen(
                self.command(node), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if wait:
            self.wait_ready(index, timeout)
        return node

    def wait_ready(self, index: int, timeout: float = 30.0) -> None:
        """Wait for the node's ready line (printed once per start), bounded by `timeout`."""
        node = self.nodes[index]
        assert node.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise ClusterError(
                    f"{node.node_id} exited with status {node.process.returncode}:\n"
                    + self.log_tail(index)
                )
            if READY_MARK in self._log_since_start(node):
                return
            time.sleep(0.05)
        raise ClusterError(f"{node.node_id} not ready after {timeout} s:\n{self.log_tail(index)}")

    def _log_since_start(self, node: LocalNode) -> str:
        try:
            with open(node.log_path, "rb") as log:
                log.seek(node.log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, index: int, lines: int = 30) -> str:
        try:
            text = self.nodes[index].log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal_node(self, index: int, sig: signal.Signals) -> None:
        node = self.nodes[index]
        if node.process is None or node.process.poll() is not None:
            raise ClusterError(f"{node.node_id} is not running")
        node.process.send_signal(sig)

    def kill_node(self, index: int) -> None:
        """kill -9: no shutdown, no flush; what the WAL holds is all that survives."""
        self.signal_node(index, signal.SIGKILL)
        process = self.nodes[index].process
        assert process is not None
        process.wait(timeout=10)

    def _request_stop(self, node: LocalNode) -> None:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGCONT)  # a paused node cannot act on SIGTERM
            node.process.send_signal(signal.SIGTERM)

    def stop_node(self, index: int, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within `timeout`."""
        node = self.nodes[index]
        if not node.running:
            return
        assert node.process is not None
        self._request_stop(node)
        try:
            node.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=10)

    def restart_node(self, index: int, timeout: float = 30.0) -> None:
        self.stop_node(index)
        self.start_node(index, wait=True, timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:  # all at once, then wait for each
            self._request_stop(node)
        for node in self.nodes:
            self.stop_node(node.index)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_material(
    tls_dir: str | os.PathLike[str],
    addresses: Sequence[str] = (),
    host: str = "127.0.0.1",
    clients: Mapping[str, str] = _CLIENTS,
) -> tuple[ClusterMaterial, dict[str, str]]:
    """A local cluster's CA, certificates (node ones for `addresses`) and tokens in clear
    (role -> token), made on first use and reused after."""
    hosts = sorted({host, "127.0.0.1", "localhost"})
    material = write_cluster_material(tls_dir, addresses, hosts, clients)
    return material, _local_tokens(material)


def credentials_env(
    material: ClusterMaterial, tokens: Mapping[str, str], name: str = "admin", role: str = "admin"
) -> dict[str, str]:
    """KVSTORE_* settings a client or the CLI reads: the CA, client certificate `name`, and
    the token of `role`."""
    return {
        "KVSTORE_TLS_CA": str(material.ca),
        "KVSTORE_TLS_CERT": str(material.client_cert(name)),
        "KVSTORE_TLS_KEY": str(material.client_key(name)),
        "KVSTORE_TOKEN": tokens[role],
    }


# A local cluster's tokens in clear, beside the digests the nodes check: a development
# cluster must hand its tokens to clients across restarts. A deployment keeps only digests.
_LOCAL_TOKENS = "local-tokens.txt"


def _local_tokens(material: ClusterMaterial) -> dict[str, str]:
    path = material.directory / _LOCAL_TOKENS
    if material.tokens:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.writelines(f"{role} {token}\n" for role, token in material.tokens.items())
        return dict(material.tokens)
    tokens = {}
    for line in path.read_text().splitlines():
        role, _, token = line.partition(" ")
        tokens[role] = token
    return tokens

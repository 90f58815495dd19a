"""A Redis primary with replicas on 127.0.0.1, for side-by-side figures: the closest thing
Redis has to an N=3 W=2 store is a primary, two replicas, and `WAIT 1` after each write.

Every server is started here, tracked by its pid and stopped by that pid only.

    python -m kvstore.bench.redis_local ensure   # install Debian's redis-server if missing
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from kvstore.bench.debian import PackageUnavailable, ensure_program
from kvstore.bench.processes import ensure_command, terminate

SERVER = "redis-server"


class RedisUnavailable(RuntimeError):
    """redis-server is not installed and could not be installed, or did not start."""


def ensure_redis_server() -> str:
    """The path of redis-server, installing Debian's package first when it is missing and
    this process may (root, or sudo without a password)."""
    try:
        return ensure_program(SERVER, SERVER)
    except PackageUnavailable as exc:
        raise RedisUnavailable(str(exc)) from None


def info(address: str, section: str = "replication", timeout: float = 2.0) -> dict[str, str]:
    """`INFO section` of a server as a dict, over a raw socket (no client library needed)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            data += _receive(conn, address)
        header, rest = data.split(b"\r\n", 1)
        if not header.startswith(b"$"):
            raise RedisUnavailable(f"{address} answered INFO with {header!r}")
        size = int(header[1:])
        while len(rest) < size:
            rest += _receive(conn, address)
    fields = {}
    for line in rest[:size].decode().splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value
    return fields


def _receive(conn: socket.socket, address: str) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:  # closed: without this the loops above would spin for ever
        raise ConnectionError(f"{address} closed the connection mid-answer")
    return chunk


class RedisReplicaSet:
    """A primary on ports[0] and one replica on each further port, data under data_dir.

    Persistence matches a kvstore node's default: every write goes to the append-only file,
    which is not fsynced per write (kvstore: WAL without fsync)."""

    def __init__(self, data_dir: str | os.PathLike[str], ports: list[int]) -> None:
        if not 1 <= len(ports) <= 16:
            raise ValueError("a replica set has 1..16 servers")
        self.data_dir = Path(data_dir).resolve()
        self.addresses = [f"127.0.0.1:{port}" for port in ports]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def primary(self) -> str:
        return self.addresses[0]

    @property
    def pids(self) -> dict[str, int]:
        """{"redis-primary": pid, "redis-replica-1": pid, ...} of the running servers."""
        names = ["redis-primary"] + [f"redis-replica-{i}" for i in range(1, len(self.addresses))]
        return {name: p.pid for name, p in zip(names, self.processes, strict=False)}

    def _command(self, index: int) -> list[str]:
        port = self.addresses[index].rsplit(":", 1)[1]
        folder = self.data_dir / f"redis-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            ensure_redis_server(), "--port", port, "--bind", "127.0.0.1",
            "--dir", str(folder), "--save", "", "--appendonly", "yes",
            "--appendfsync", "no", "--daemonize", "no",
            "--logfile", str(self.data_dir / f"redis-{index}.log"),
            # The primary sends its first (empty) snapshot to a new replica at once, instead of
            # waiting 5 s for more replicas to share it: start() waits for that sync.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if index:
            host, primary_port = self.primary.rsplit(":", 1)
            command += ["--replicaof", host, primary_port]
        return command

    def start(self, timeout: float = 30.0) -> None:
        """Start every server and wait (bounded) until all replicas are in sync."""
        if self.processes:
            raise RedisUnavailable("already started")
        for index in range(len(self.addresses)):
            self.processes.append(
                subprocess.Popen(
                    self._command(index), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                )
            )
        deadline = time.monotonic() + timeout
        want = len(self.addresses) - 1
        last = "not asked yet"
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    self.stop()
                    raise RedisUnavailable(f"a redis-server exited: see {self.data_dir}/*.log")
            try:
                primary = info(self.primary)
                links = [info(a).get("master_link_status") for a in self.addresses[1:]]
                if int(primary.get("connected_slaves", "0")) == want and all(
                    link == "up" for link in links
                ):
                    return
                last = f"{primary.get('connected_slaves')} replicas connected, links {links}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise RedisUnavailable(f"replicas not in sync after {timeout} s ({last})")

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.processes, timeout)
        self.processes = []

    def __enter__(self) -> RedisReplicaSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    return ensure_command(argv, "kvstore.bench.redis_local", ensure_redis_server, RedisUnavailable)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

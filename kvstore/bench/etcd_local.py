"""A 3-member etcd cluster on 127.0.0.1, for side-by-side figures: a store that commits every
write through Raft and fsyncs it (etcd's default, kept on purpose: that is the comparison).

Every member is started here, tracked by its pid and stopped by that pid only, also when the
start fails. Readiness is asked over etcd's HTTP endpoints with the standard library (/health
and the JSON gateway's /v3/maintenance/status), so it needs neither gRPC nor etcdctl.

    python -m kvstore.bench.etcd_local ensure   # install Debian's etcd-server if missing
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kvstore.bench.debian import PackageUnavailable, ensure_program
from kvstore.bench.processes import ensure_command, terminate

SERVER = "etcd"  # the program
PACKAGE = "etcd-server"  # Debian's package that holds it
MEMBERS = 3
HTTP_TIMEOUT_S = 2.0  # one readiness probe of one member


class EtcdUnavailable(RuntimeError):
    """etcd is not installed and could not be installed, or the cluster did not come up."""


def ensure_etcd_server() -> str:
    """The path of etcd, installing Debian's etcd-server first when it is missing and this
    process may (root, or sudo without a password)."""
    try:
        return ensure_program(SERVER, PACKAGE)
    except PackageUnavailable as exc:
        raise EtcdUnavailable(str(exc)) from None


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
        decoded = json.loads(answer.read())
    if not isinstance(decoded, dict):
        raise EtcdUnavailable(f"{url} answered {decoded!r}")
    return decoded


def member_status(client_address: str) -> dict[str, object]:
    """A member's Maintenance.Status through the JSON gateway: its id (header.member_id), the
    leader it follows (leader; 0 while there is none), raftIndex, ... (uint64s as strings)."""
    return _post_json(f"http://{client_address}/v3/maintenance/status", {})


def member_healthy(client_address: str) -> bool:
    """etcd's own health check: true when the member has a leader and a quorum read through
    Raft succeeds."""
    try:
        with urllib.request.urlopen(
            f"http://{client_address}/health", timeout=HTTP_TIMEOUT_S
        ) as answer:
            return bool(json.loads(answer.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


class EtcdCluster:
    """`members` etcd processes on 127.0.0.1, data under data_dir; ports holds two ports per
    member, client ports first (ports[:members]) then peer ports.

    Clients reach the members at `addresses` (HOST:PORT, gRPC and HTTP on the same port)."""

    def __init__(
        self, data_dir: str | os.PathLike[str], ports: list[int], members: int = MEMBERS
    ) -> None:
        if not 1 <= members <= 7 or len(ports) != 2 * members:
            raise ValueError("an etcd cluster here has 1..7 members and two ports per member")
        self.data_dir = Path(data_dir).resolve()
        self.names = [f"etcd-{index}" for index in range(members)]
        self.addresses = [f"127.0.0.1:{port}" for port in ports[:members]]
        self.peer_urls = [f"http://127.0.0.1:{port}" for port in ports[members:]]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> str:
        """The client addresses, comma-separated: kvbench's --seeds for --store etcd."""
        return ",".join(self.addresses)

    @property
    def pids(self) -> dict[str, int]:
        """{"etcd-0": pid, "etcd-1": pid, ...} of the running members."""
        return {name: p.pid for name, p in zip(self.names, self.processes, strict=False)}

    def _command(self, index: int) -> list[str]:
        client_url = f"http://{self.addresses[index]}"
        initial = ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls, strict=True))
        return [
            ensure_etcd_server(),
            "--name", self.names[index],
            "--data-dir", str(self.data_dir / self.names[index]),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_urls[index],
            "--initial-advertise-peer-urls", self.peer_urls[index],
            "--initial-cluster", initial,
            # A token of its own, so members of another cluster started by a parallel run can
            # never join this one even if a port were reused.
            "--initial-cluster-token", f"kvbench-{os.getpid()}-{id(self)}",
            "--initial-cluster-state", "new",
            # Metrics and pprof stay off; fsync on every commit stays on (etcd's default).
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start every member and wait (bounded) until all agree on one leader and each one
        passes its health check (a quorum read through Raft)."""
        if self.processes:
            raise EtcdUnavailable("already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index, name in enumerate(self.names):
                with open(self.data_dir / f"{name}.log", "wb") as log:
                    self.processes.append(
                        subprocess.Popen(self._command(index), stdout=log, stderr=subprocess.STDOUT)
                    )
            self._wait_ready(timeout)
        except BaseException:  # a failed or interrupted start leaves nothing running
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "not asked yet"
        while time.monotonic() < deadline:
            for name, process in zip(self.names, self.processes, strict=True):
                if process.poll() is not None:
                    raise EtcdUnavailable(
                        f"{name} exited with status {process.returncode}: see"
                        f" {self.data_dir / name}.log"
                    )
            try:
                leaders = {str(member_status(a).get("leader", "0")) for a in self.addresses}
                healthy = [member_healthy(a) for a in self.addresses]
                if len(leaders) == 1 and leaders != {"0"} and all(healthy):
                    return
                last = f"leaders seen {sorted(leaders)}, healthy {healthy}"
            except (OSError, ValueError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise EtcdUnavailable(f"etcd cluster not ready after {timeout:g} s ({last})")

    def _leader_index(self) -> int | None:
        """Which of our processes leads, if the members can say (best effort: None if not)."""
        try:
            statuses = [member_status(address) for address in self.addresses]
        except (OSError, ValueError):
            return None
        for index, status in enumerate(statuses):
            header = status.get("header")
            if isinstance(header, dict) and header.get("member_id") == status.get("leader"):
                return index
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """Followers first, then the leader. A leader told to stop hands its leadership to a
        connected follower and waits for that; stopped together, it would wait seconds for
        a follower that is itself stopping. With its followers gone it just stops."""
        running = [p for p in self.processes if p.poll() is None]
        leader_index = self._leader_index() if len(running) > 1 else None
        leader = None if leader_index is None else self.processes[leader_index]
        for wave in ([p for p in running if p is not leader], [leader] if leader else []):
            terminate(wave, timeout)
        self.processes = []

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    return ensure_command(argv, "kvstore.bench.etcd_local", ensure_etcd_server, EtcdUnavailable)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The docker backend: the containers of one compose project (cluster/compose.yaml), broken
through the docker SDK.

- kill / start / pause / resume: the container itself (`docker kill`, `start`, `pause`).
- wipe: kill, then a throwaway container of the same image with the node's volumes deletes the
  data directory, then start: the node comes back empty.
- partitions: iptables DROP rules inside each container (the compose file grants NET_ADMIN),
  in a chain of their own (KVCHAOS) so heal flushes only what the harness added. Without
  iptables in the image, isolating one node falls back to `docker network disconnect`; the
  other partitions need iptables (Unsupported).
- slow links: `tc netem` inside each container where the kernel has it; otherwise the in-repo
  fault proxy inside each container, with iptables nat redirecting the node's connections to
  its peers through it (see `slow`).

Only containers labelled with the project are touched, each by id.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from kvstore.chaos.backend import Backend, ChaosError, Grudge, Unsupported, symmetric
from kvstore.client import TLS, Client
from kvstore.config import CLIENT_PORT_OFFSET
from kvstore.errors import KvError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
CHAIN = "KVCHAOS"
DEFAULT_PORT = 7100
# The in-container fault proxies (slow links without netem): their uid, which the nat rules
# let through, and their ports (one per peer, by the peer's index).
PROXY_UID = 65534
SLOW_CHAIN = "KVCHAOS_SLOW"
PROXY_BASE_PORT = 17100


def signal_processes(argument: str, signal: str) -> str:
    """A shell command that sends `signal` to every process in the container with `argument`
    among its argv (the node: `serve`; the fault proxies: `kvstore.chaos.proxy`). procps is
    not in the image, so /proc is read directly."""
    return (
        'python3 -c "import os, signal\n'
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        argv = open('/proc/%s/cmdline' % pid, 'rb').read().split(b'\\\\0')\n"
        f"        if b'{argument}' in argv:\n"
        f"            os.kill(int(pid), signal.{signal})\n"
        "    except OSError:\n"
        '        pass"'
    )


def _env(container: Any) -> dict[str, str]:
    pairs = (item.partition("=") for item in container.attrs["Config"].get("Env") or [])
    return {name: value for name, _, value in pairs}


# Where the compose cluster keeps its CA and the admin client certificate (cluster/compose.yaml:
# CLUSTER_TLS_DIR, a volume every container mounts).
_TLS_FILES = {
    "ca.pem": "ca.pem",
    "admin.pem": "clients/admin.pem",
    "admin-key.pem": "clients/admin-key.pem",
}


def _credentials(containers: list[Any], into: Path) -> dict[str, Any]:
    """The harness's client options: the cluster's admin identity, copied out of a running
    container's TLS volume (the client port of the compose cluster takes client
    certificates); plaintext when the cluster has none."""
    for container in containers:
        if container.status != "running":
            continue
        copied = {}
        for name, path in _TLS_FILES.items():
            code, output = container.exec_run(["cat", f"/tls/{path}"])
            if code != 0:
                return {"tls": False}
            target = into / name
            target.touch(mode=0o600)
            target.write_bytes(output)
            copied[name] = str(target)
        return {"tls": TLS(copied["ca.pem"], copied["admin.pem"], copied["admin-key.pem"])}
    return {"tls": False}


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, project: str, ready_timeout_s: float = 90.0) -> None:
        try:
            import docker  # the `chaos` extra
        except ImportError as exc:
            raise ChaosError(
                "the docker backend needs the docker SDK: pip install 'kvstore-dynamo[chaos]'"
            ) from exc
        try:
            self._docker = docker.from_env()
            self._docker.ping()
        except docker.errors.DockerException as exc:
            raise ChaosError(f"no docker engine answers: {exc}") from exc
        self._errors = docker.errors
        containers = self._docker.containers.list(
            all=True, filters={"label": f"{PROJECT_LABEL}={project}"}
        )
        if not containers:
            raise ChaosError(f"compose project {project!r} has no containers: start it first")
        self.project = project
        self._credentials_dir = tempfile.mkdtemp(prefix="kvchaos-tls-")
        self._client_options = _credentials(containers, Path(self._credentials_dir))
        self._ids: dict[str, str] = {}
        for container in sorted(containers, key=lambda c: c.name):
            self._ids[self._advertised(container, ready_timeout_s)] = container.id
        self.nodes = list(self._ids)
        self._ready_timeout_s = ready_timeout_s
        # node -> the networks it was taken off, with its aliases on each
        self._disconnected: dict[str, dict[str, list[str]]] = {}
        self._stopped: set[str] = set()  # paused by SIGSTOP (the freezer failed)

    def _advertised(self, container: Any, timeout_s: float) -> str:
        """The address the node advertises (its name in the ring), asked of the node itself:
        the entrypoint derives it inside the container (its DNS name on the network)."""
        port = _env(container).get("KVSTORE_LISTEN", f"0.0.0.0:{DEFAULT_PORT}").rpartition(":")[2]
        address = f"{self._ip(container)}:{port}"
        deadline = time.monotonic() + timeout_s
        with Client([address], timeout=2.0, **self._client_options) as kv:
            while True:
                try:
                    return str(kv.status(address).address)
                except KvError as exc:
                    if time.monotonic() > deadline:
                        raise ChaosError(f"{container.name} does not answer: {exc}") from exc
                    time.sleep(0.5)

    def container(self, node: str) -> Any:
        try:
            container = self._docker.containers.get(self._ids[node])
        except KeyError:
            raise ChaosError(f"{node} is not a node of project {self.project}") from None
        return container

    def _ip(self, container: Any) -> str:
        networks = container.attrs["NetworkSettings"]["Networks"] or {}
        for network in networks.values():
            if network.get("IPAddress"):
                return str(network["IPAddress"])
        raise ChaosError(f"container {container.name} has no IP address (not running?)")

    def reachable(self, node: str) -> str:
        # Re-read each time: a container restarted (kill, wipe) may get another address.
        return f"{self._ip(self.container(node))}:{node.rpartition(':')[2]}"

    def client_reachable(self, node: str) -> str:
        container = self.container(node)
        listen = _env(container).get("KVSTORE_CLIENT_LISTEN", "")
        port = (
            listen.rpartition(":")[2]
            if listen
            else str(int(node.rpartition(":")[2]) + CLIENT_PORT_OFFSET)
        )
        return f"{self._ip(container)}:{port}"

    def _exec(self, node: str, script: str) -> tuple[int, str]:
        code, output = self.container(node).exec_run(["sh", "-c", script], user="root")
        return int(code), output.decode(errors="replace").strip()

    def kill(self, node: str) -> None:
        self.container(node).kill()

    def start(self, node: str) -> None:
        container = self.container(node)
        if container.status != "running":
            container.start()
        self.wait_serving([node], self._ready_timeout_s)

    def pause(self, node: str) -> None:
        """`docker pause` (the cgroup freezer). On a loaded machine runc may fail to freeze
        ("unable to freeze"): retried, then the node's process is stopped with SIGSTOP
        instead, which freezes the node the same way for its peers and clients."""
        for _ in range(3):
            try:
                self.container(node).pause()
                return
            except self._errors.APIError as exc:
                failure = exc
                time.sleep(0.5)
        code, output = self._exec(node, signal_processes("serve", "SIGSTOP"))
        if code != 0:
            raise ChaosError(f"cannot pause {node}: {failure}; SIGSTOP: {output[-200:]}")
        self._stopped.add(node)

    def resume(self, node: str) -> None:
        container = self.container(node)
        if container.status == "paused":
            container.unpause()
        if node in self._stopped:
            self._exec_ok(node, signal_processes("serve", "SIGCONT"))
            self._stopped.discard(node)

    def wipe(self, node: str) -> None:
        container = self.container(node)
        data_dir = _env(container).get("KVSTORE_DATA_DIR", "/data")
        if container.status in ("running", "paused"):
            container.kill()
        self._docker.containers.run(
            container.image.id,
            entrypoint=["sh", "-c", f'rm -rf "{data_dir}"/* "{data_dir}"/.[!.]*; true'],
            volumes_from=[container.id],
            network_mode="none",
            remove=True,
            labels={PROJECT_LABEL + ".kvchaos-wipe": self.project},
        )
        self.start(node)

    def running(self, node: str) -> bool:
        return bool(self.container(node).status in ("running", "paused"))

    # ---- partitions ----

    def partition(self, grudge: Grudge) -> None:
        cut = symmetric(grudge)
        ips = {node: self._ip(self.container(node)) for node in self.nodes}
        for node in self.nodes:
            rules = "".join(
                f"iptables -A {CHAIN} -s {ips[o]} -j DROP && "
                f"iptables -A {CHAIN} -d {ips[o]} -j DROP && "
                for o in sorted(cut.get(node, ()))
            )
            code, output = self._exec(
                node,
                f"(iptables -N {CHAIN} 2>/dev/null; true) && "
                f"(iptables -C INPUT -j {CHAIN} 2>/dev/null || iptables -I INPUT -j {CHAIN}) && "
                f"(iptables -C OUTPUT -j {CHAIN} 2>/dev/null || iptables -I OUTPUT -j {CHAIN})"
                f" && iptables -F {CHAIN} && {rules}true",
            )
            if code != 0:
                if "not found" in output and self._isolation(cut) is not None:
                    self.heal()
                    self._disconnect(self._isolation(cut) or node)
                    return
                raise Unsupported(f"iptables in {node} failed ({code}): {output[-300:]}")

    def _isolation(self, cut: dict[str, set[str]]) -> str | None:
        """The node a grudge cuts off from all others, if that is all it does."""
        for node in self.nodes:
            others = set(self.nodes) - {node}
            if cut.get(node, set()) == others and all(cut.get(o, set()) <= {node} for o in others):
                return node
        return None

    def _disconnect(self, node: str) -> None:
        container = self.container(node)
        # Compose's aliases (the service name, e.g. `seed`) must come back on reconnect.
        networks = {
            name: list(settings.get("Aliases") or [])
            for name, settings in (container.attrs["NetworkSettings"]["Networks"] or {}).items()
        }
        for name in networks:
            self._docker.networks.get(name).disconnect(container.id)
        self._disconnected[node] = networks

    def heal(self) -> None:
        for node, networks in list(self._disconnected.items()):
            for name, aliases in networks.items():
                self._docker.networks.get(name).connect(self._ids[node], aliases=aliases)
            del self._disconnected[node]
        for node in self.nodes:
            container = self.container(node)
            if container.status == "running":
                self._exec(node, f"iptables -F {CHAIN} 2>/dev/null; true")

    # ---- slow links ----

    def slow(self, delay_ms: int, jitter_ms: int) -> None:
        """tc netem on each container's eth0 where the kernel has it; otherwise the in-repo
        proxy inside each container: one `kvstore.chaos.proxy` per peer, run as PROXY_UID,
        and a nat REDIRECT of the node's own connections to that peer into it (the proxy's
        own connections, by uid, pass). Each connection is delayed by its initiator's proxy,
        both ways."""
        netem = f"tc qdisc replace dev eth0 root netem delay {delay_ms}ms {jitter_ms}ms"
        if self._exec(self.nodes[0], netem)[0] == 0:
            for node in self.nodes[1:]:
                self._exec_ok(node, netem)
            return
        targets = {node: self.reachable(node) for node in self.nodes}
        try:
            for node in self.nodes:
                rules = [f"(iptables -t nat -N {CHAIN} 2>/dev/null; true)",
                         f"(iptables -t nat -C OUTPUT -j {CHAIN} 2>/dev/null"
                         f" || iptables -t nat -I OUTPUT -j {CHAIN})",
                         f"iptables -t nat -F {CHAIN}",
                         f"(iptables -N {SLOW_CHAIN} 2>/dev/null; true)",
                         f"(iptables -C OUTPUT -j {SLOW_CHAIN} 2>/dev/null"
                         f" || iptables -I OUTPUT -j {SLOW_CHAIN})",
                         f"iptables -F {SLOW_CHAIN}"]  # fmt: skip
                for peer_index, peer in enumerate(self.nodes):
                    if peer == node:
                        continue
                    port = PROXY_BASE_PORT + peer_index
                    ip, _, peer_port = targets[peer].rpartition(":")
                    self.container(node).exec_run(
                        ["python3", "-m", "kvstore.chaos.proxy", "--listen", f"127.0.0.1:{port}",
                         "--target", targets[peer], "--delay-ms", str(delay_ms),
                         "--jitter-ms", str(jitter_ms)],
                        user=str(PROXY_UID), detach=True,
                    )  # fmt: skip
                    match = f"-p tcp -d {ip} --dport {peer_port} -m owner ! --uid-owner {PROXY_UID}"
                    # New connections go to the proxy (nat runs before filter, so they no
                    # longer match below); connections opened before are reset on their next
                    # packet, and the node reconnects through the proxy.
                    rules.append(
                        f"iptables -t nat -A {CHAIN} {match} -j REDIRECT --to-ports {port}"
                    )
                    rules.append(
                        f"iptables -A {SLOW_CHAIN} {match} -j REJECT --reject-with tcp-reset"
                    )
                self._exec_ok(node, " && ".join(rules))
        except ChaosError:
            self.unslow()
            raise

    def _exec_ok(self, node: str, script: str) -> None:
        code, output = self._exec(node, script)
        if code != 0:
            raise Unsupported(f"in {node}: `{script[:120]}...` failed ({code}): {output[-300:]}")

    def unslow(self) -> None:
        """Undo either kind of slowing (idempotent: it also cleans up after a run that died).
        Stopping the proxies resets the connections through them; new ones go direct."""
        stop_proxies = signal_processes("kvstore.chaos.proxy", "SIGTERM")
        for node in self.nodes:
            if self.container(node).status == "running":
                self._exec(
                    node,
                    "tc qdisc del dev eth0 root 2>/dev/null;"
                    f" iptables -t nat -F {CHAIN} 2>/dev/null;"
                    f" iptables -F {SLOW_CHAIN} 2>/dev/null; {stop_proxies}; true",
                )

    def client_options(self) -> dict[str, Any]:
        return dict(self._client_options)

    def close(self) -> None:
        self.heal()
        self._docker.close()
        shutil.rmtree(self._credentials_dir, ignore_errors=True)

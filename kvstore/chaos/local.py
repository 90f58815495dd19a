"""The local backend: node processes on 127.0.0.1 (LocalCluster), with every node-to-node
link through the in-repo fault proxy.

Node i reaches peer j at its own proxy link i->j (the node's `peer_routes`), so cutting the
links i->j and j->i partitions the two nodes while clients still reach both. Only the
processes this backend started are ever signalled, by pid.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

from kvstore.chaos.backend import Backend, ChaosError, Grudge, symmetric
from kvstore.chaos.proxy import FaultProxy, LinkState
from kvstore.client import TLS
from kvstore.node.local_cluster import ClusterError, LocalCluster, free_ports


class LocalBackend(Backend):
    name = "local"

    def __init__(
        self,
        count: int,
        data_dir: str | Path,
        node_args: tuple[str, ...] = (),
        ready_timeout_s: float = 60.0,
        tls_dir: str | Path | None = None,
    ) -> None:
        """`tls_dir`: run the nodes secure (see LocalCluster); the harness's clients then
        need the matching KVSTORE_TLS_* / KVSTORE_TOKEN in their environment."""
        if not 1 <= count <= 16:
            raise ChaosError("the local backend runs 1..16 nodes")
        # Every port at once (held together, so all distinct): the nodes' and the links'.
        link_ports = free_ports(count * count)
        ports, link_ports = link_ports[:count], link_ports[count:]
        self.nodes = [f"127.0.0.1:{port}" for port in ports]
        self._proxy = FaultProxy()
        self._links: dict[tuple[str, str], str] = {}
        routes: list[list[str]] = [[] for _ in range(count)]
        for i, source in enumerate(self.nodes):
            for target in self.nodes:
                if target != source:
                    name = f"{source}->{target}"
                    self._links[(source, target)] = name
                    via = self._proxy.add_link(name, target, link_ports.pop())
                    routes[i].append(f"{target}={via}")
        self.cluster = LocalCluster(
            count,
            data_dir,
            ports=ports,
            extra_args=node_args,
            node_args=lambda i: ("--peer-routes", ",".join(routes[i])),
            tls_dir=tls_dir,
        )
        self._ready_timeout_s = ready_timeout_s
        self._cut: set[str] = set()
        try:
            self.cluster.start(timeout=ready_timeout_s)
        except ClusterError:
            self.close()
            raise

    def client_reachable(self, node: str) -> str:
        return self.cluster.client_of(node)

    def client_options(self) -> dict[str, Any]:
        env = self.cluster.client_credentials()
        if not env:
            return {"tls": False}
        tls = TLS(env["KVSTORE_TLS_CA"], env["KVSTORE_TLS_CERT"], env["KVSTORE_TLS_KEY"])
        return {"tls": tls, "token": env["KVSTORE_TOKEN"]}

    def _index(self, node: str) -> int:
        try:
            return self.nodes.index(node)
        except ValueError:
            raise ChaosError(f"{node} is not a node of this cluster") from None

    def kill(self, node: str) -> None:
        self.cluster.kill_node(self._index(node))

    def start(self, node: str) -> None:
        index = self._index(node)
        if not self.cluster.nodes[index].running:
            try:
                self.cluster.start_node(index, wait=True, timeout=self._ready_timeout_s)
            except ClusterError as exc:
                raise ChaosError(str(exc)) from exc

    def pause(self, node: str) -> None:
        self.cluster.signal_node(self._index(node), signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self.cluster.signal_node(self._index(node), signal.SIGCONT)

    def wipe(self, node: str) -> None:
        index = self._index(node)
        if self.cluster.nodes[index].running:
            self.cluster.kill_node(index)
        shutil.rmtree(self.cluster.nodes[index].data_dir, ignore_errors=True)
        self.start(node)

    def partition(self, grudge: Grudge) -> None:
        cut = {self._links[(a, b)] for a, others in symmetric(grudge).items() for b in others}
        for name in self._cut - cut:
            self._proxy.restore(name)
        for name in cut - self._cut:
            self._proxy.cut(name)
        self._cut = cut

    def heal(self) -> None:
        self.partition({})

    def slow(self, delay_ms: int, jitter_ms: int) -> None:
        for name in self._links.values():
            self._proxy.set_delay(name, delay_ms, jitter_ms)

    def unslow(self) -> None:
        self.slow(0, 0)

    def link_states(self) -> dict[str, LinkState]:
        """Each proxy link's counters (bytes, aborted and held connections): proof that the
        nodes' traffic went through the links and that cuts took hold."""
        return self._proxy.links()

    def running(self, node: str) -> bool:
        return self.cluster.nodes[self._index(node)].running

    def close(self) -> None:
        try:
            self.cluster.stop()
        finally:
            self._proxy.close()

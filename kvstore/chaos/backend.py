"""What a fault-injection backend can do to a cluster's nodes, whatever runs them.

Nodes are named by their advertised address (their identity in the ring). The harness dials a
node's cluster port at `reachable(node)`, which differs where the advertised name does not
resolve from the harness (a container's hostname), and its client port at
`client_reachable(node)`. A partition is a *grudge*: for each node, the nodes it must
not exchange packets with; nemeses build it symmetric.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, TypeVar

from kvstore.client import Client
from kvstore.errors import KvError

Grudge = Mapping[str, Set[str]]
T = TypeVar("T")


class ChaosError(Exception):
    """A fault could not be injected or healed (a backend limit, a node that will not start)."""


class Unsupported(ChaosError):
    """This backend (or this kernel) cannot inject that kind of fault."""


class Backend(ABC):
    name: str
    nodes: list[str]

    def reachable(self, node: str) -> str:
        """Where the harness dials the node's cluster port (admin calls, health)."""
        return node

    @abstractmethod
    def client_reachable(self, node: str) -> str:
        """Where a client dials the node's client port."""

    def client_options(self) -> dict[str, Any]:
        """Client(..., **options): the credentials of the harness's clients (an admin
        identity on a secure cluster; `tls=False` on a plaintext one)."""
        return {"tls": False}

    @abstractmethod
    def kill(self, node: str) -> None:
        """kill -9: no shutdown; only what the node's WAL holds survives."""

    @abstractmethod
    def start(self, node: str) -> None:
        """Start a killed node again (same data) and wait until it serves."""

    @abstractmethod
    def pause(self, node: str) -> None:
        """Freeze every process of the node (SIGSTOP, docker pause): alive but silent."""

    @abstractmethod
    def resume(self, node: str) -> None: ...

    @abstractmethod
    def wipe(self, node: str) -> None:
        """Kill the node, delete its data directory, start it empty (it rejoins)."""

    @abstractmethod
    def partition(self, grudge: Grudge) -> None:
        """Cut the links the grudge names (replacing any earlier partition)."""

    @abstractmethod
    def heal(self) -> None:
        """Undo every partition."""

    @abstractmethod
    def slow(self, delay_ms: int, jitter_ms: int) -> None:
        """Delay every packet between nodes."""

    @abstractmethod
    def unslow(self) -> None: ...

    @abstractmethod
    def running(self, node: str) -> bool:
        """Whether the node's process exists (paused counts as running)."""

    def wait_serving(self, nodes: list[str] | None = None, timeout_s: float = 60.0) -> None:
        """Wait (bounded) until each node answers its health check SERVING."""
        deadline = time.monotonic() + timeout_s
        for node in nodes or self.nodes:
            with Client([self.reachable(node)], timeout=2.0, **self.client_options()) as kv:
                while True:
                    try:
                        if kv.health(self.reachable(node)) == "SERVING":
                            break
                    except KvError:
                        pass
                    if time.monotonic() > deadline:
                        raise ChaosError(f"{node} not serving within {timeout_s} s")
                    time.sleep(0.2)

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release what the backend holds (not the nodes it was given)."""


def choose(
    names: str | Sequence[str], registry: Mapping[str, Callable[[], T]], what: str
) -> list[T]:
    """`"a,b"` (or a list) -> a new object per name from `registry`, in order; empty or unknown
    names are a ChaosError naming the known ones."""
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [name.strip() for name in items if name.strip()]
    if not items:
        raise ChaosError(f"name at least one {what}: {', '.join(registry)}")
    unknown = [name for name in items if name not in registry]
    if unknown:
        raise ChaosError(f"unknown {what} {unknown}; known: {', '.join(registry)}")
    return [registry[name]() for name in items]


def symmetric(grudge: Mapping[str, Set[str]]) -> dict[str, set[str]]:
    """The grudge with every cut link cut both ways."""
    out: dict[str, set[str]] = {node: set(others) for node, others in grudge.items()}
    for node, others in grudge.items():
        for other in others:
            out.setdefault(other, set()).add(node)
    return out

"""Nemeses: named faults, each injected for a fault period and healed for a calm one.

A nemesis picks its victims from the cycle number (and the run's seeded random source), so
a run with the same seed breaks the same nodes in the same order. Names (`--nemesis`, comma
separated; several take turns, one fault at a time):

- isolate          one node cut off from every other node (clients still reach it)
- split            a majority|minority partition (2|3 of five), different halves each cycle
- bridge           two halves that share one node, which sees both sides
- majorities-ring  each node sees only its ring neighbours: a majority each, none the same
- kill             kill -9 one node (a different one each cycle); started again at heal
- pause            SIGSTOP / docker pause one node; resumed at heal
- wipe             kill one node, delete its data, start it empty: it must rebuild
- slow             every node-to-node packet delayed (default 50 ms ± 25 ms)
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from kvstore.chaos.backend import Backend, ChaosError, Grudge, choose


class Nemesis(ABC):
    name: str

    @abstractmethod
    def inject(self, backend: Backend, cycle: int, rng: random.Random) -> str:
        """Break something; return what was done (for the report's timeline)."""

    @abstractmethod
    def heal(self, backend: Backend) -> str:
        """Undo what `inject` did."""


def _victim(backend: Backend, cycle: int) -> str:
    return backend.nodes[cycle % len(backend.nodes)]


def _between(groups: Sequence[Sequence[str]]) -> dict[str, set[str]]:
    """The grudge that cuts every link between different groups (a node in two groups, the
    bridge, keeps its links to both)."""
    grudge: dict[str, set[str]] = {}
    for i, group in enumerate(groups):
        others = {n for j, g in enumerate(groups) if j != i for n in g}
        for node in group:
            together = {n for g in groups if node in g for n in g}
            grudge.setdefault(node, set()).update(others - together)
    return grudge


class _Partition(Nemesis):
    def inject(self, backend: Backend, cycle: int, rng: random.Random) -> str:
        grudge = self.grudge(list(backend.nodes), cycle, rng)
        backend.partition(grudge)
        cut = sorted(f"{a}|{b}" for a, others in grudge.items() for b in others if a < b)
        return f"{self.name}: cut {len(cut)} links {cut}"

    def heal(self, backend: Backend) -> str:
        backend.heal()
        return f"{self.name}: healed"

    @abstractmethod
    def grudge(self, nodes: list[str], cycle: int, rng: random.Random) -> Grudge: ...


class Isolate(_Partition):
    name = "isolate"

    def grudge(self, nodes: list[str], cycle: int, rng: random.Random) -> Grudge:
        lone = nodes[cycle % len(nodes)]
        return _between([[lone], [n for n in nodes if n != lone]])


class Split(_Partition):
    name = "split"

    def grudge(self, nodes: list[str], cycle: int, rng: random.Random) -> Grudge:
        if len(nodes) < 2:
            raise ChaosError("a split needs at least two nodes")
        shuffled = rng.sample(nodes, len(nodes))
        minority = len(nodes) // 2
        return _between([shuffled[:minority], shuffled[minority:]])


class Bridge(_Partition):
    name = "bridge"

    def grudge(self, nodes: list[str], cycle: int, rng: random.Random) -> Grudge:
        if len(nodes) < 3:
            raise ChaosError("a bridge needs at least three nodes")
        shuffled = rng.sample(nodes, len(nodes))
        half = len(nodes) // 2
        bridge = shuffled[half]
        return _between([shuffled[: half + 1], [bridge, *shuffled[half + 1 :]]])


class MajoritiesRing(_Partition):
    name = "majorities-ring"

    def grudge(self, nodes: list[str], cycle: int, rng: random.Random) -> Grudge:
        if len(nodes) < 4:
            raise ChaosError("a majorities ring needs at least four nodes")
        ring = rng.sample(nodes, len(nodes))
        count = len(ring)
        # Each node keeps its neighbours within `reach` steps on both sides (so the grudge is
        # symmetric by construction): the least reach that makes a majority with itself.
        # Five nodes: each sees its two neighbours; no two nodes see the same three.
        reach = -(-(count // 2) // 2)
        grudge: dict[str, set[str]] = {}
        for i, node in enumerate(ring):
            near = {ring[(i + d) % count] for d in range(-reach, reach + 1)}
            grudge[node] = set(ring) - near
        return grudge


class Kill(Nemesis):
    name = "kill"

    def __init__(self) -> None:
        self._down: list[str] = []

    def inject(self, backend: Backend, cycle: int, rng: random.Random) -> str:
        node = _victim(backend, cycle)
        backend.kill(node)
        self._down.append(node)
        return f"kill: {node} killed (-9)"

    def heal(self, backend: Backend) -> str:
        started, self._down = self._down, []
        for node in started:
            backend.start(node)
        return f"kill: started {started}"


class Pause(Nemesis):
    name = "pause"

    def __init__(self) -> None:
        self._paused: list[str] = []

    def inject(self, backend: Backend, cycle: int, rng: random.Random) -> str:
        node = _victim(backend, cycle)
        backend.pause(node)
        self._paused.append(node)
        return f"pause: {node} paused"

    def heal(self, backend: Backend) -> str:
        resumed, self._paused = self._paused, []
        for node in resumed:
            backend.resume(node)
        return f"pause: resumed {resumed}"


class Wipe(Nemesis):
    name = "wipe"

    def inject(self, backend: Backend, cycle: int, rng: random.Random) -> str:
        node = _victim(backend, cycle)
        backend.wipe(node)
        return f"wipe: {node} killed, wiped and started empty"

    def heal(self, backend: Backend) -> str:
        return "wipe: nothing to heal (anti-entropy and hints rebuild the node)"


class Slow(Nemesis):
    name = "slow"

    def __init__(self, delay_ms: int = 50, jitter_ms: int = 25) -> None:
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms

    def inject(self, backend: Backend, cycle: int, rng: random.Random) -> str:
        backend.slow(self.delay_ms, self.jitter_ms)
        return f"slow: every link {self.delay_ms} ms ± {self.jitter_ms} ms"

    def heal(self, backend: Backend) -> str:
        backend.unslow()
        return "slow: links back to normal"


NEMESES: dict[str, Callable[[], Nemesis]] = {
    cls.name: cls for cls in (Isolate, Split, Bridge, MajoritiesRing, Kill, Pause, Wipe, Slow)
}


def make_nemeses(names: str | Sequence[str]) -> list[Nemesis]:
    """`isolate,kill` -> the nemeses, in turn order. Unknown names are a ChaosError."""
    return choose(names, NEMESES, "nemesis")

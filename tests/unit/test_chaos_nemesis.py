"""Nemeses (kvstore.chaos.nemesis) against a fake backend that records what it is asked to
do: who each fault hits, the shape of each partition, and the name parsing."""

from __future__ import annotations

import random
from itertools import combinations

import pytest

from kvstore.chaos.backend import Backend, ChaosError, Grudge, symmetric
from kvstore.chaos.nemesis import (
    NEMESES,
    Bridge,
    Isolate,
    Kill,
    MajoritiesRing,
    Pause,
    Slow,
    Split,
    Wipe,
    make_nemeses,
)

NODES = [f"n{i}:7100" for i in range(1, 6)]


class FakeBackend(Backend):
    name = "fake"

    def client_reachable(self, node: str) -> str:
        return node

    def __init__(self, nodes: list[str] | None = None) -> None:
        self.nodes = list(nodes or NODES)
        self.calls: list[tuple] = []
        self.grudges: list[dict[str, set[str]]] = []

    def kill(self, node: str) -> None:
        self.calls.append(("kill", node))

    def start(self, node: str) -> None:
        self.calls.append(("start", node))

    def pause(self, node: str) -> None:
        self.calls.append(("pause", node))

    def resume(self, node: str) -> None:
        self.calls.append(("resume", node))

    def wipe(self, node: str) -> None:
        self.calls.append(("wipe", node))

    def partition(self, grudge: Grudge) -> None:
        self.calls.append(("partition",))
        self.grudges.append({node: set(others) for node, others in grudge.items()})

    def heal(self) -> None:
        self.calls.append(("heal",))

    def slow(self, delay_ms: int, jitter_ms: int) -> None:
        self.calls.append(("slow", delay_ms, jitter_ms))

    def unslow(self) -> None:
        self.calls.append(("unslow",))

    def running(self, node: str) -> bool:
        return True


def links(grudge: Grudge, nodes: list[str]) -> set[frozenset[str]]:
    """The links left once the grudge is cut both ways."""
    cut = symmetric(grudge)
    return {
        frozenset((a, b))
        for a, b in combinations(nodes, 2)
        if b not in cut.get(a, set()) and a not in cut.get(b, set())
    }


def neighbours(grudge: Grudge, nodes: list[str], node: str) -> set[str]:
    return {other for link in links(grudge, nodes) if node in link for other in link - {node}}


def inject(nemesis, cycle: int, seed: int = 7, nodes: list[str] | None = None):
    backend = FakeBackend(nodes)
    report = nemesis.inject(backend, cycle, random.Random(seed))
    assert backend.calls == [("partition",)]
    return backend.grudges[0], report


# --- partitions --------------------------------------------------------------------------


def test_isolate_cuts_one_node_from_all_the_others() -> None:
    lone_nodes = []
    for cycle in range(5):
        grudge, report = inject(Isolate(), cycle)
        assert symmetric(grudge) == grudge  # built symmetric already
        lone = NODES[cycle % 5]
        rest = [n for n in NODES if n != lone]
        assert neighbours(grudge, NODES, lone) == set()
        assert links(grudge, NODES) == {frozenset(pair) for pair in combinations(rest, 2)}
        assert report.startswith("isolate: cut 4 links")
        lone_nodes.append(lone)
    assert len(set(lone_nodes)) == 5


def test_partitions_heal_every_link() -> None:
    for nemesis in (Isolate(), Split(), Bridge(), MajoritiesRing()):
        backend = FakeBackend()
        assert nemesis.heal(backend) == f"{nemesis.name}: healed"
        assert backend.calls == [("heal",)]


@pytest.mark.parametrize("seed", range(20))
def test_split_makes_a_minority_and_a_majority(seed: int) -> None:
    grudge, report = inject(Split(), 0, seed)
    kept = links(grudge, NODES)
    # The components of the kept links: two groups, 2 and 3, each fully linked inside.
    groups: list[set[str]] = []
    for node in NODES:
        group = {node} | neighbours(grudge, NODES, node)
        if group not in groups:
            groups.append(group)
    assert sorted(len(g) for g in groups) == [2, 3]
    small, big = sorted(groups, key=len)
    assert small.isdisjoint(big) and small | big == set(NODES)
    inside = {frozenset(p) for g in groups for p in combinations(sorted(g), 2)}
    assert kept == inside
    assert report.startswith("split: cut 6 links")


def test_split_halves_vary_with_the_random_source() -> None:
    rng = random.Random(1)
    backend = FakeBackend()
    split = Split()
    for cycle in range(10):
        split.inject(backend, cycle, rng)
    assert len({frozenset(neighbours(g, NODES, NODES[0])) for g in backend.grudges}) > 1


def test_same_seed_gives_the_same_split() -> None:
    for nemesis in (Split(), Bridge(), MajoritiesRing()):
        first, _ = inject(nemesis, 3, seed=42)
        again, _ = inject(nemesis, 3, seed=42)
        assert first == again
    others = {frozenset(frozenset(v) for v in inject(Split(), 0, s)[0].values()) for s in range(10)}
    assert len(others) > 1


@pytest.mark.parametrize("seed", range(20))
def test_bridge_links_one_node_to_both_halves(seed: int) -> None:
    grudge, _ = inject(Bridge(), 0, seed)
    assert symmetric(grudge) == grudge
    full = [n for n in NODES if neighbours(grudge, NODES, n) == set(NODES) - {n}]
    assert len(full) == 1
    bridge = full[0]
    rest = [n for n in NODES if n != bridge]
    halves: list[set[str]] = []
    for node in rest:
        half = ({node} | neighbours(grudge, NODES, node)) - {bridge}
        if half not in halves:
            halves.append(half)
    assert sorted(len(h) for h in halves) == [2, 2]
    one, two = halves
    assert one.isdisjoint(two)
    for a in one:
        for b in two:
            assert frozenset((a, b)) not in links(grudge, NODES)
    for half in halves:
        for a, b in combinations(sorted(half), 2):
            assert frozenset((a, b)) in links(grudge, NODES)
        for node in half:
            assert frozenset((node, bridge)) in links(grudge, NODES)


@pytest.mark.parametrize("seed", range(20))
def test_majorities_ring_gives_each_node_a_different_majority(seed: int) -> None:
    grudge, _ = inject(MajoritiesRing(), 0, seed)
    assert symmetric(grudge) == grudge
    views = []
    for node in NODES:
        near = neighbours(grudge, NODES, node)
        assert len(near) == 2
        view = frozenset(near | {node})
        assert len(view) > len(NODES) // 2
        views.append(view)
    assert len(set(views)) == len(NODES)


@pytest.mark.parametrize("count", [6, 7])
def test_majorities_ring_stays_symmetric_with_more_nodes(count: int) -> None:
    nodes = [f"n{i}:7100" for i in range(1, count + 1)]
    grudge, _ = inject(MajoritiesRing(), 0, seed=3, nodes=nodes)
    assert symmetric(grudge) == grudge
    for node in nodes:
        assert len(neighbours(grudge, nodes, node)) + 1 > count // 2


@pytest.mark.parametrize(("nemesis", "count"), [(Split(), 1), (Bridge(), 2), (MajoritiesRing(), 2)])
def test_partitions_refuse_too_few_nodes(nemesis, count: int) -> None:
    backend = FakeBackend([f"n{i}" for i in range(count)])
    with pytest.raises(ChaosError):
        nemesis.inject(backend, 0, random.Random(0))
    assert backend.calls == []


# --- process faults ----------------------------------------------------------------------


@pytest.mark.parametrize("cycle", range(7))
def test_kill_kills_the_cycle_node_and_heal_starts_it(cycle: int) -> None:
    backend = FakeBackend()
    kill = Kill()
    victim = NODES[cycle % 5]
    assert victim in kill.inject(backend, cycle, random.Random(0))
    assert backend.calls == [("kill", victim)]
    assert victim in kill.heal(backend)
    assert backend.calls == [("kill", victim), ("start", victim)]
    backend.calls.clear()
    kill.heal(backend)  # nothing left down: heals nothing twice
    assert backend.calls == []


@pytest.mark.parametrize("cycle", range(7))
def test_pause_pauses_the_cycle_node_and_heal_resumes_it(cycle: int) -> None:
    backend = FakeBackend()
    pause = Pause()
    victim = NODES[cycle % 5]
    pause.inject(backend, cycle, random.Random(0))
    assert backend.calls == [("pause", victim)]
    pause.heal(backend)
    assert backend.calls == [("pause", victim), ("resume", victim)]
    backend.calls.clear()
    pause.heal(backend)
    assert backend.calls == []


def test_kill_and_pause_pick_a_different_node_each_cycle() -> None:
    for nemesis in (Kill(), Pause()):
        backend = FakeBackend()
        for cycle in range(5):
            nemesis.inject(backend, cycle, random.Random(0))
            nemesis.heal(backend)
        hit = [node for call, node in backend.calls if call in ("kill", "pause")]
        assert hit == NODES


@pytest.mark.parametrize("cycle", range(6))
def test_wipe_wipes_the_cycle_node_and_heal_does_nothing(cycle: int) -> None:
    backend = FakeBackend()
    wipe = Wipe()
    wipe.inject(backend, cycle, random.Random(0))
    assert backend.calls == [("wipe", NODES[cycle % 5])]
    wipe.heal(backend)
    assert backend.calls == [("wipe", NODES[cycle % 5])]


def test_slow_delays_every_link_and_heal_restores_them() -> None:
    backend = FakeBackend()
    slow = Slow()
    assert "50 ms" in slow.inject(backend, 0, random.Random(0))
    assert backend.calls == [("slow", 50, 25)]
    slow.heal(backend)
    assert backend.calls == [("slow", 50, 25), ("unslow",)]
    custom = FakeBackend()
    Slow(200, 10).inject(custom, 0, random.Random(0))
    assert custom.calls == [("slow", 200, 10)]


# --- names -------------------------------------------------------------------------------


def test_make_nemeses_keeps_the_given_order() -> None:
    made = make_nemeses("isolate, kill")
    assert [type(n) for n in made] == [Isolate, Kill]
    assert [n.name for n in make_nemeses(["slow", "split", "isolate"])] == [
        "slow",
        "split",
        "isolate",
    ]
    assert [n.name for n in make_nemeses("wipe,,pause,")] == ["wipe", "pause"]


def test_make_nemeses_knows_every_documented_name() -> None:
    names = ["isolate", "split", "bridge", "majorities-ring", "kill", "pause", "wipe", "slow"]
    assert list(NEMESES) == names
    assert [n.name for n in make_nemeses(",".join(names))] == names


def test_make_nemeses_gives_each_turn_its_own_state() -> None:
    first, second = make_nemeses("kill,kill")
    assert first is not second
    backend = FakeBackend()
    first.inject(backend, 0, random.Random(0))
    second.heal(backend)
    assert backend.calls == [("kill", NODES[0])]


@pytest.mark.parametrize("names", ["", " ", ",", "isolate,nope", "Kill", ["partition"], []])
def test_make_nemeses_refuses_unknown_or_no_names(names) -> None:
    with pytest.raises(ChaosError):
        make_nemeses(names)

"""Dotted version vectors with exact causal contexts: the causal model of one key.

The rules are those of docs/versions.md (Preguiça, Baquero, Almeida et al.; Riak 2.x
dvvset; the causal contexts of delta-state CRDTs). A key's state on one replica is a
clock (the writes of the key it has seen) and the siblings that are still live under it;
each sibling carries the dot (actor, counter) of the write that made it.

A clock is a set of dots, held as a version vector minus a few holes: a plain vector
cannot say "has seen (a, 3) but not (a, 2)", and a context that covers a sibling its
holder was never shown lets a later put drop that sibling. A put therefore returns the
replica's clock with holes where the siblings it did not replace are (`put_context`).

Everything here is pure: states are immutable, functions return new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VersionVector = Mapping[str, int]


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """One write event: the `counter`-th write coordinated by `actor` for this key."""

    actor: str
    counter: int


@dataclass(frozen=True, slots=True)
class Clock:
    """A set of dots: every dot its vector covers except its holes.

    Canonical form (what `make_clock` returns, and what equality relies on): no zero
    entries, every hole under its actor's entry and never at its top (such a hole folds into
    a smaller entry), so two clocks holding the same dots are equal.
    """

    vector: VersionVector
    holes: frozenset[Dot] = frozenset()

    def covers(self, dot: Dot) -> bool:
        """True when the write `dot` is in the set: seen by the clock's holder."""
        return self.vector.get(dot.actor, 0) >= dot.counter and dot not in self.holes

    @property
    def entries(self) -> int:
        """Its size: vector entries plus holes (what limits bound)."""
        return len(self.vector) + len(self.holes)


EMPTY_CLOCK = Clock({})


@dataclass(frozen=True, slots=True)
class Sibling:
    """One concurrent version: a value, or a tombstone when `value` is None."""

    dot: Dot
    value: bytes | None
    # Wall-clock milliseconds at the creating replica: for display and GC, never ordering.
    timestamp_ms: int = field(default=0, compare=False)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class KeyState:
    """What one replica knows of one key. Siblings are kept sorted by dot (canonical form)
    and every sibling's dot is covered by the clock."""

    clock: Clock
    siblings: tuple[Sibling, ...]

    @property
    def vector(self) -> VersionVector:
        return self.clock.vector

    @property
    def live_values(self) -> list[bytes]:
        return [s.value for s in self.siblings if s.value is not None]

    @property
    def found(self) -> bool:
        return any(s.value is not None for s in self.siblings)


EMPTY = KeyState(clock=EMPTY_CLOCK, siblings=())


def merge_vectors(a: VersionVector, b: VersionVector) -> dict[str, int]:
    """Pointwise maximum: the least vector that has seen everything a and b have."""
    merged = dict(a)
    for actor, counter in b.items():
        if counter > merged.get(actor, 0):
            merged[actor] = counter
    return merged


def make_clock(vector: VersionVector, holes: Iterable[Dot] = ()) -> Clock:
    """The canonical clock of `vector` minus `holes` (holes it does not cover are moot)."""
    entries = {a: c for a, c in vector.items() if c > 0}
    gaps = {h for h in holes if 1 <= h.counter <= entries.get(h.actor, 0)}
    for actor in {h.actor for h in gaps}:
        top = entries[actor]
        while Dot(actor, top) in gaps:
            gaps.discard(Dot(actor, top))
            top -= 1
        if top:
            entries[actor] = top
        else:
            del entries[actor]
    return Clock(entries, frozenset(gaps))


def join(a: Clock, b: Clock) -> Clock:
    """The union of two clocks: every dot either has seen."""
    vector = merge_vectors(a.vector, b.vector)
    if not a.holes and not b.holes:
        return Clock(vector)
    # A hole of one side stays a hole only where the other side has not seen that dot.
    holes = [h for h in a.holes if not b.covers(h)]
    holes.extend(h for h in b.holes if not a.covers(h))
    return make_clock(vector, holes)


def without(clock: Clock, dots: Iterable[Dot]) -> Clock:
    """The clock minus `dots`."""
    extra = [d for d in dots if clock.covers(d)]
    return make_clock(clock.vector, clock.holes.union(extra)) if extra else clock


def canonical_state(clock: Clock, siblings: Iterable[Sibling]) -> KeyState:
    """A state of a canonical clock, its siblings sorted by dot."""
    return KeyState(clock=clock, siblings=tuple(sorted(siblings, key=lambda s: s.dot)))


def write(
    state: KeyState,
    context: Clock,
    actor: str,
    value: bytes | None,
    timestamp_ms: int = 0,
) -> tuple[KeyState, Dot]:
    """Apply a client write at a replica whose actor id is `actor`.

    Drops the siblings the client's context has seen, adds the new value under a fresh dot
    and returns the new state with that dot. A write with an empty context drops nothing.
    `value=None` writes a tombstone (a delete). The replica's clock learns the context: the
    writes it replaced are then known as replaced, by this replica and by every replica it
    ships its state to, even those that have not seen them yet.

    The new counter exceeds both the replica's and the context's entry for this actor: a
    context can never carry a dot of ours we have not made, but if it does (a replica that
    lost its data and kept its actor id), reusing a dot would silently merge two writes.
    """
    kept = [s for s in state.siblings if not context.covers(s.dot)]
    known = join(state.clock, context)
    counter = known.vector.get(actor, 0) + 1
    dot = Dot(actor, counter)
    vector = dict(known.vector)
    vector[actor] = counter
    # Canonical as it stands: the actor's holes are all below its old entry.
    clock = Clock(vector, known.holes)
    kept.append(Sibling(dot=dot, value=value, timestamp_ms=timestamp_ms))
    return canonical_state(clock, kept), dot


def put_context(state: KeyState, dot: Dot) -> Clock:
    """The exact context of the put that made `dot`, once applied as `state`.

    The other siblings of `state` outlived the write because the writer's context did not
    cover them: the writer was never shown them, so its next put must not replace them.
    The result covers the writer's context, its own write, and writes already replaced
    at the replica (those are dead by a writer that had seen them); nothing live besides.
    """
    return without(state.clock, (s.dot for s in state.siblings if s.dot != dot))


def merge(a: KeyState, b: KeyState) -> KeyState:
    """Combine two replicas' states of one key (replication, repair, handoff).

    A sibling survives when the other side holds the same dot or has not seen it. The
    result is commutative, associative and idempotent, so replaying a merge is harmless.
    """
    if a is b:
        return a
    b_dots = {s.dot for s in b.siblings}
    a_dots = {s.dot for s in a.siblings}
    kept = [s for s in a.siblings if s.dot in b_dots or not b.clock.covers(s.dot)]
    kept.extend(s for s in b.siblings if s.dot not in a_dots and not a.clock.covers(s.dot))
    return canonical_state(join(a.clock, b.clock), kept)


def merge_all(states: Iterable[KeyState]) -> KeyState:
    result = EMPTY
    for state in states:
        result = merge(result, state)
    return result


def is_stale(replica: KeyState, merged: KeyState) -> bool:
    """True when a replica's state lacks something the merged state has (read repair)."""
    return replica != merge(replica, merged)

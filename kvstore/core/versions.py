"""Dotted version vectors (DVVSet): the causal data model of one key.

The rules are those of shared/notes/versions.md (Preguiça, Baquero, Almeida et al.; Riak
2.x dvvset). A key's state on one replica is a version vector plus the siblings that are
concurrent under it; each sibling carries the dot (actor, counter) of the write that made it.

Everything here is pure: states are immutable, functions return new ones.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VersionVector = Mapping[str, int]


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """One write event: the `counter`-th write coordinated by `actor` for this key."""

    actor: str
    counter: int


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
    """What one replica knows of one key. Siblings are kept sorted by dot (canonical form)."""

    vector: VersionVector
    siblings: tuple[Sibling, ...]

    @property
    def live_values(self) -> list[bytes]:
        return [s.value for s in self.siblings if s.value is not None]

    @property
    def found(self) -> bool:
        return any(s.value is not None for s in self.siblings)


EMPTY = KeyState(vector={}, siblings=())


class Order(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"  # a happened before b
    AFTER = "after"  # a happened after b
    CONCURRENT = "concurrent"


def covers(vector: VersionVector, dot: Dot) -> bool:
    """True when a vector has seen the write `dot`."""
    return vector.get(dot.actor, 0) >= dot.counter


def merge_vectors(a: VersionVector, b: VersionVector) -> dict[str, int]:
    """Pointwise maximum: the least vector that has seen everything a and b have."""
    merged = dict(a)
    for actor, counter in b.items():
        if counter > merged.get(actor, 0):
            merged[actor] = counter
    return merged


def descends(a: VersionVector, b: VersionVector) -> bool:
    """True when a has seen everything b has (a >= b pointwise)."""
    return all(a.get(actor, 0) >= counter for actor, counter in b.items())


def compare(a: VersionVector, b: VersionVector) -> Order:
    a_ge_b = descends(a, b)
    b_ge_a = descends(b, a)
    if a_ge_b and b_ge_a:
        return Order.EQUAL
    if a_ge_b:
        return Order.AFTER
    if b_ge_a:
        return Order.BEFORE
    return Order.CONCURRENT


def canonical_state(vector: Mapping[str, int], siblings: Iterable[Sibling]) -> KeyState:
    # Zero entries carry no information; dropping them makes equal knowledge compare equal.
    return KeyState(
        vector={a: c for a, c in vector.items() if c > 0},
        siblings=tuple(sorted(siblings, key=lambda s: s.dot)),
    )


def write(
    state: KeyState,
    context: VersionVector,
    actor: str,
    value: bytes | None,
    timestamp_ms: int = 0,
) -> tuple[KeyState, Dot]:
    """Apply a client write at a replica whose actor id is `actor`.

    Drops the siblings the client's context has seen, adds the new value under a fresh dot
    and returns the new state with that dot. A write with an empty context drops nothing.
    `value=None` writes a tombstone (a delete).

    The new counter exceeds both the replica's and the context's entry for this actor: a
    context can never carry a dot of ours we have not made, but if it does (a replica that
    lost its data and kept its actor id), reusing a dot would silently merge two writes.
    """
    kept = [s for s in state.siblings if not covers(context, s.dot)]
    counter = max(state.vector.get(actor, 0), context.get(actor, 0)) + 1
    dot = Dot(actor, counter)
    vector = merge_vectors(state.vector, context)
    vector[actor] = counter
    kept.append(Sibling(dot=dot, value=value, timestamp_ms=timestamp_ms))
    return canonical_state(vector, kept), dot


def merge(a: KeyState, b: KeyState) -> KeyState:
    """Combine two replicas' states of one key (replication, repair, handoff).

    A sibling survives when the other side holds the same dot or has not seen it. The
    result is commutative, associative and idempotent, so replaying a merge is harmless.
    """
    if a is b:
        return a
    b_dots = {s.dot for s in b.siblings}
    a_dots = {s.dot for s in a.siblings}
    kept = [s for s in a.siblings if s.dot in b_dots or not covers(b.vector, s.dot)]
    kept.extend(s for s in b.siblings if s.dot not in a_dots and not covers(a.vector, s.dot))
    return canonical_state(merge_vectors(a.vector, b.vector), kept)


def merge_all(states: Iterable[KeyState]) -> KeyState:
    result = EMPTY
    for state in states:
        result = merge(result, state)
    return result


def is_stale(replica: KeyState, merged: KeyState) -> bool:
    """True when a replica's state lacks something the merged state has (read repair)."""
    return replica != merge(replica, merged)

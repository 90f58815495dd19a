"""The pure-Python reference of the version rules that kvstore._native runs.

Each function here is the plain statement of a rule of docs/versions.md, as
kvstore.core.versions implemented it before its hot path moved into the Cython extension;
the native functions must answer exactly as these do (same results, same dots, same
canonical forms), and tests/property/test_native_versions.py holds them to it on random
states. Nothing in the running node calls this module: it is the specification the
native code is tested against, and the baseline bench/native_versions.py measures.

The functions work on the data model's own classes (Dot, Clock, Sibling, KeyState), but
never lean on native code for the rules: a clock's `covers` is restated here in Python.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvstore.core.versions import EMPTY, Clock, Dot, KeyState, Sibling, VersionVector


def covers(clock: Clock, dot: Dot) -> bool:
    """True when the write `dot` is in the set `clock` stands for (Clock.covers)."""
    return clock.vector.get(dot.actor, 0) >= dot.counter and dot not in clock.holes


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
    holes = [h for h in a.holes if not covers(b, h)]
    holes.extend(h for h in b.holes if not covers(a, h))
    return make_clock(vector, holes)


def without(clock: Clock, dots: Iterable[Dot]) -> Clock:
    """The clock minus `dots`."""
    extra = [d for d in dots if covers(clock, d)]
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
    write_id: bytes = b"",
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

    `write_id` (the client's id of the write, b"": none) is stored on the new sibling. The
    write is applied whatever siblings already carry that id: answering a retry of a write
    the replica already holds, instead of applying it again, is the coordinator's part.
    A sibling sharing a write id with one the context covers is dropped too: it is the same
    write applied again by another coordinator (a retry's twin), and the writer has seen
    that write, whichever of its dots it was shown.
    """
    replaced_ids = {s.write_id for s in state.siblings if s.write_id and covers(context, s.dot)}
    kept = [
        s
        for s in state.siblings
        if not covers(context, s.dot) and (not s.write_id or s.write_id not in replaced_ids)
    ]
    known = join(state.clock, context)
    counter = known.vector.get(actor, 0) + 1
    dot = Dot(actor, counter)
    vector = dict(known.vector)
    vector[actor] = counter
    # Canonical as it stands: the actor's holes are all below its old entry.
    clock = Clock(vector, known.holes)
    kept.append(Sibling(dot=dot, value=value, timestamp_ms=timestamp_ms, write_id=write_id))
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
    kept = [s for s in a.siblings if s.dot in b_dots or not covers(b.clock, s.dot)]
    kept.extend(s for s in b.siblings if s.dot not in a_dots and not covers(a.clock, s.dot))
    return canonical_state(join(a.clock, b.clock), kept)


def merge_all(states: Iterable[KeyState]) -> KeyState:
    result = EMPTY
    for state in states:
        result = merge(result, state)
    return result


def is_stale(replica: KeyState, merged: KeyState) -> bool:
    """True when a replica's state lacks something the merged state has (read repair)."""
    return replica != merge(replica, merged)

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

Where the code is. Every request runs these rules on states decoded from records (a put:
the coordinator's write, then a merge at each replica), so they run in C: the classes and
functions below are those of the Cython extension kvstore._native, re-exported here, which
is where the rest of kvstore takes them from. The extension sits below core and imports
nothing from kvstore; the data model's classes are its cdef classes (so C code builds and
reads them without Python calls), with the behaviour of the frozen dataclasses they
replace: immutable; equal, hashed and (Dot) ordered by their fields as those were;
Sibling equality ignoring the timestamp; Clock and KeyState unhashable. Each function's
plain Python statement is kvstore.core.versions_reference, the reference the native code
is tested against (tests/property/test_native_versions.py).

- Dot(actor, counter): one write event, the `counter`-th write of the key coordinated by
  `actor`. Ordered as the tuple (actor, counter).
- Clock(vector, holes=frozenset()): a set of dots, every dot its vector covers except its
  holes. Canonical form (what `make_clock` returns, and what equality relies on): no zero
  entries, every hole under its actor's entry and never at its top (such a hole folds into
  a smaller entry), so two clocks holding the same dots are equal. `covers(dot)`: whether
  the dot is in the set; `entries`: vector entries plus holes (what limits bound).
- Sibling(dot, value, timestamp_ms=0, write_id=b""): one concurrent version, a value or a
  tombstone when `value` is None (`is_tombstone`). The wall-clock timestamp of the
  creating replica is for display and GC only, never ordering; the write id is the
  client's id of the write that made it (b"": none given). Neither is part of equality:
  both belong to the dot.
- KeyState(clock, siblings): what one replica knows of one key; siblings sorted by dot
  (canonical form), each covered by the clock. `vector`, `found`, and `live_values`: the
  live values, one per write id (see write ids below).

- merge_vectors(a, b): the pointwise maximum of two vectors.
- make_clock(vector, holes=()): the canonical clock of `vector` minus `holes`.
- join(a, b): the union of two clocks; without(clock, dots): the clock minus `dots`.
- canonical_state(clock, siblings): a state with its siblings sorted by dot.
- write(state, context, actor, value, timestamp_ms=0, write_id=b"") -> (state, dot): a
  client write at the replica whose actor id is `actor`: drops the siblings `context`
  covers (and their write ids' twins, below), adds `value` (None: a tombstone) under a dot
  past both the state's and the context's counter for `actor`; the clock learns the
  context, holes included.
- put_context(state, dot): the exact context of the put that made `dot`: the clock minus
  the other siblings' dots (the writer was never shown them).
- merge(a, b), merge_all(states): combine replicas' states; a sibling survives when the
  other side holds the same dot or has not seen it. Commutative, associative, idempotent.
- is_stale(replica, merged): whether a replica's state lacks something of `merged`.

Write ids (issue 16). A put may carry a client-generated id, kept on its sibling. A retry
of a put that timed out carries the id of its first try; a coordinator whose state holds a
sibling of that id answers it as applied (`written_as`, `retry_context`) rather than make a
second dot. A retry that reaches a coordinator without the first try's sibling is applied
again: two siblings (twins) of one write, under two dots. They are not collapsed by merge:
dropping one in a merge makes merge lose associativity (a client shown only one twin
replaces it; which twin a replica still holds then depends on the order of its merges),
and merge must stay a semilattice join. Twins are one write instead where it shows:
`live_values` lists a write id's value once, and a write whose context covers one twin
drops the other too (the writer has seen the write, through whichever dot). A twin that
arrives after its write was replaced is dropped by the replica (kvstore.node.replica keeps
the replaced ids; docs/versions.md, "Late twins").
"""

from __future__ import annotations

from collections.abc import Mapping

from kvstore._native import (
    EMPTY,
    EMPTY_CLOCK,
    Clock,
    Dot,
    KeyState,
    Sibling,
    canonical_state,
    is_stale,
    join,
    make_clock,
    merge,
    merge_all,
    merge_vectors,
    put_context,
    without,
    write,
)

VersionVector = Mapping[str, int]


def written_as(state: KeyState, write_id: bytes) -> Dot | None:
    """The dot of the write `write_id` among the state's siblings (the lowest of its twins),
    or None. A scan of the few siblings a key has."""
    for sibling in state.siblings:
        if sibling.write_id == write_id:
            return sibling.dot
    return None


def retry_context(state: KeyState, context: Clock, write_id: bytes) -> Clock:
    """The exact context to answer a retry of the write `write_id`, sent with `context`,
    found already applied in `state` (or replaced there since): what its first try would
    have answered, the context sent plus the write, and no live sibling of another write
    (put_context's rule, with every twin of the write counted as the write)."""
    others = [s.dot for s in state.siblings if s.write_id != write_id]
    return join(context, without(state.clock, others))


__all__ = [
    "EMPTY",
    "EMPTY_CLOCK",
    "Clock",
    "Dot",
    "KeyState",
    "Sibling",
    "VersionVector",
    "canonical_state",
    "is_stale",
    "join",
    "make_clock",
    "merge",
    "merge_all",
    "merge_vectors",
    "put_context",
    "retry_context",
    "without",
    "write",
    "written_as",
]

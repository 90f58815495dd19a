"""Hypothesis laws of the version model (kvstore.core.versions).

States are never made up: they come from playing random histories of writes and merges on a
few simulated replicas of one key, so every generated state is one a cluster can reach (made-up
states could, for instance, give one dot two different values).

Laws: merge is a semilattice join (commutative, associative, idempotent, EMPTY is its unit);
vector comparisons agree with merge; writers carrying their own context never pile up more
siblings than there are writers; a write disappears only when a surviving write has seen it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.core.versions import (
    EMPTY,
    Dot,
    KeyState,
    Order,
    compare,
    covers,
    descends,
    merge,
    merge_all,
    merge_vectors,
    write,
)

REPLICAS = 3
ACTORS = ["node-a/1", "node-b/2", "node-c/3"]  # one actor per replica, as in the node
LAWS = settings(max_examples=300, deadline=None)

# ---- reachable states ----

# ("write", replica, context source, value): the source indexes every state seen so far
# (-1: no context); ("merge", from, to, None) ships one replica's state to another.
write_steps = st.tuples(
    st.just("write"),
    st.integers(0, REPLICAS - 1),
    st.integers(-1, 60),
    st.one_of(st.none(), st.binary(max_size=2)),  # b"" is a value, not a tombstone
)
merge_steps = st.tuples(
    st.just("merge"), st.integers(0, REPLICAS - 1), st.integers(0, REPLICAS - 1), st.none()
)
histories = st.lists(st.one_of(write_steps, merge_steps), max_size=30)


@dataclass
class Played:
    states: list[KeyState]  # every state any replica ever held, in order
    values: dict[Dot, bytes | None]  # what each dot was written with


def play(history: list[tuple[str, int, int, bytes | None]]) -> Played:
    replicas = [EMPTY] * REPLICAS
    states: list[KeyState] = [EMPTY]
    values: dict[Dot, bytes | None] = {}
    for kind, x, y, value in history:
        if kind == "write":
            context = states[y % len(states)].vector if y >= 0 else {}
            replicas[x], dot = write(replicas[x], context, ACTORS[x], value)
            assert dot not in values  # a replica never reissues a dot
            values[dot] = value
        else:
            replicas[y] = merge(replicas[y], replicas[x])
        states.extend(replicas)
    return Played(states, values)


@st.composite
def samples(draw: st.DrawFn, size: int = 3) -> tuple[list[KeyState], dict[Dot, bytes | None]]:
    """`size` reachable states of one history (repeats allowed, EMPTY among them)."""
    played = play(draw(histories))
    picks = draw(st.lists(st.integers(0, len(played.states) - 1), min_size=size, max_size=size))
    return [played.states[i] for i in picks], played.values


def check_well_formed(state: KeyState, values: dict[Dot, bytes | None]) -> None:
    dots = [s.dot for s in state.siblings]
    assert dots == sorted(dots)
    assert len(set(dots)) == len(dots)
    assert all(c > 0 for c in state.vector.values())
    for sibling in state.siblings:
        assert covers(state.vector, sibling.dot)
        assert sibling.value == values[sibling.dot]  # a dot always carries its own value


def pointwise_max(vectors: Iterable[dict[str, int]]) -> dict[str, int]:
    vectors = list(vectors)
    actors = {a for v in vectors for a in v}
    return {a: max(v.get(a, 0) for v in vectors) for a in actors}


# ---- merge is a semilattice join ----


@LAWS
@given(samples())
def test_merge_is_commutative_associative_idempotent(
    sample: tuple[list[KeyState], dict[Dot, bytes | None]],
) -> None:
    (a, b, c), values = sample
    ab = merge(a, b)
    assert ab == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a
    assert merge(a, EMPTY) == a == merge(EMPTY, a)
    assert merge(ab, a) == ab == merge(ab, b)  # absorbing what was merged changes nothing
    assert merge_all([a, b, c]) == merge_all([c, a, b]) == merge_all([b, c, a])
    for state in (a, b, c, ab, merge(ab, c)):
        check_well_formed(state, values)


@LAWS
@given(samples())
def test_merge_only_drops_what_the_other_side_has_seen(
    sample: tuple[list[KeyState], dict[Dot, bytes | None]],
) -> None:
    (a, b, _), _ = sample
    merged = merge(a, b)
    mine, theirs = set(a.siblings), set(b.siblings)
    assert set(merged.siblings) <= mine | theirs
    for sibling in mine - set(merged.siblings):
        assert covers(b.vector, sibling.dot) and sibling not in theirs
    for sibling in theirs - set(merged.siblings):
        assert covers(a.vector, sibling.dot) and sibling not in mine
    # A sibling both sides hold always survives.
    assert mine & theirs <= set(merged.siblings)


@LAWS
@given(samples(), st.sampled_from(range(REPLICAS)), st.one_of(st.none(), st.binary(max_size=2)))
def test_a_write_descends_from_the_state_it_was_applied_to(
    sample: tuple[list[KeyState], dict[Dot, bytes | None]], replica: int, value: bytes | None
) -> None:
    (state, context_state, _), _ = sample
    new, dot = write(state, context_state.vector, ACTORS[replica], value)
    assert merge(state, new) == new  # the old state is absorbed
    assert compare(new.vector, state.vector) is Order.AFTER
    assert descends(new.vector, context_state.vector)
    assert dot.counter > state.vector.get(dot.actor, 0)
    assert dot.counter > context_state.vector.get(dot.actor, 0)
    survivors = {s.dot for s in new.siblings}
    assert survivors == {
        s.dot for s in state.siblings if not covers(context_state.vector, s.dot)
    } | {dot}


# ---- comparisons agree with merge ----


@LAWS
@given(samples(size=4))
def test_comparisons_agree_with_merge(
    sample: tuple[list[KeyState], dict[Dot, bytes | None]],
) -> None:
    states, _ = sample
    for a in states:
        for b in states:
            va, vb = dict(a.vector), dict(b.vector)
            joined = merge_vectors(va, vb)
            assert joined == pointwise_max([va, vb])
            assert merge(a, b).vector == joined
            assert descends(va, vb) == (joined == va)
            assert descends(vb, va) == (joined == vb)
            order = compare(va, vb)
            assert (order is Order.EQUAL) == (va == vb)
            assert (order is Order.CONCURRENT) == (not descends(va, vb) and not descends(vb, va))
            assert (order is Order.AFTER) == (descends(va, vb) and va != vb)
            assert (order is Order.BEFORE) == (descends(vb, va) and va != vb)
            assert (
                compare(vb, va)
                is {
                    Order.EQUAL: Order.EQUAL,
                    Order.AFTER: Order.BEFORE,
                    Order.BEFORE: Order.AFTER,
                    Order.CONCURRENT: Order.CONCURRENT,
                }[order]
            )
    assert merge_all(states).vector == pointwise_max(dict(s.vector) for s in states)


# ---- writers with their own context: bounded siblings, nothing lost unseen ----


@dataclass
class Writer:
    context: dict[str, int] = field(default_factory=dict)


@dataclass
class Record:
    context: dict[str, int]
    value: bytes | None


# R + W > N = 3: every read meets the replicas that acknowledged each completed put.
QUORUMS = [(1, 3), (2, 2), (3, 1), (2, 3), (3, 2), (3, 3)]

# ("put", writer, replicas, value) writes at replicas[0] and ships to the next W - 1;
# ("read", writer, replicas, None) merges the first R; ("merge", from, replicas, None)
# ships one replica's state to replicas[0] (anti-entropy, repair, late replication).
replica_orders = st.permutations(range(REPLICAS))
puts = st.tuples(
    st.just("put"), st.integers(0, 3), replica_orders, st.one_of(st.none(), st.binary(max_size=1))
)
reads = st.tuples(st.just("read"), st.integers(0, 3), replica_orders, st.none())
merges = st.tuples(st.just("merge"), st.integers(0, REPLICAS - 1), replica_orders, st.none())


def run_writers(
    writers_count: int,
    quorum: tuple[int, int],
    steps: list[tuple[str, int, list[int], bytes | None]],
) -> None:
    r, w = quorum
    replicas = [EMPTY] * REPLICAS
    writers = [Writer() for _ in range(writers_count)]
    written: dict[Dot, Record] = {}
    for kind, who, order, value in steps:
        if kind == "put":
            writer = writers[who % writers_count]
            at = order[0]
            replicas[at], dot = write(replicas[at], writer.context, ACTORS[at], value)
            written[dot] = Record(dict(writer.context), value)
            writer.context = dict(replicas[at].vector)  # the context the put returns
            for other in order[1:w]:
                replicas[other] = merge(replicas[other], replicas[at])
        elif kind == "read":
            writer = writers[who % writers_count]
            writer.context = dict(merge_all(replicas[i] for i in order[:r]).vector)
        else:
            replicas[order[0]] = merge(replicas[order[0]], replicas[who])
        for state in replicas:
            assert len(state.siblings) <= writers_count, state

    final = merge_all(replicas)
    assert len(final.siblings) <= writers_count
    present = {s.dot: s for s in final.siblings}
    for dot, record in written.items():
        if dot in present:
            assert present[dot].value == record.value
            continue
        # An absent write was seen: the vector covers it, and a surviving write was made
        # with a context that had seen it (so its writer knowingly replaced it).
        assert covers(final.vector, dot)
        assert any(covers(written[kept].context, dot) for kept in present), dot
    if written:
        assert final.siblings  # something always survives


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 4),
    st.sampled_from(QUORUMS),
    st.lists(st.one_of(puts, reads, merges), max_size=40),
)
def test_writers_reading_and_writing_through_quorums_leave_at_most_one_sibling_each(
    writers_count: int,
    quorum: tuple[int, int],
    steps: list[tuple[str, int, list[int], bytes | None]],
) -> None:
    run_writers(writers_count, quorum, steps)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.lists(st.one_of(puts, merges), max_size=40))
def test_writers_keeping_their_put_context_need_no_quorum(
    writers_count: int, steps: list[tuple[str, int, list[int], bytes | None]]
) -> None:
    """With only its own put contexts, a writer replaces its previous write wherever it
    writes next, even at a replica that never saw it (W = 1, no reads)."""
    run_writers(writers_count, (1, 1), steps)


def test_the_bound_needs_the_writer_to_see_its_own_write() -> None:
    """Control: reading a replica that missed one's own put (R + W <= N) does pile up
    siblings, so the quorum tests above do depend on R + W > N."""
    writer = Writer()
    replicas = [EMPTY] * REPLICAS
    replicas[0], _ = write(replicas[0], writer.context, ACTORS[0], b"1")  # W = 1
    writer.context = dict(replicas[1].vector)  # R = 1 read of a replica without it
    replicas[2], _ = write(replicas[2], writer.context, ACTORS[2], b"2")
    assert len(merge_all(replicas).siblings) == 2

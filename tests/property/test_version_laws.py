"""Hypothesis laws of the version model, on states built by real writes and merges (so only
reachable states are generated): merge is a semilattice join, comparisons agree with merge,
writers that carry their own context never pile up siblings, and nothing acknowledged is lost
without a later write that saw it."""

from __future__ import annotations

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

ACTORS = ["a", "b", "c"]
# One step of a history: ("write", replica, context_source, value) or ("sync", from, to).
write_step = st.tuples(
    st.just("write"),
    st.integers(0, 2),
    st.integers(-1, 30),  # -1: no context; else the vector of an earlier state
    st.one_of(st.none(), st.binary(max_size=3)),
)
sync_step = st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.none())
histories = st.lists(st.one_of(write_step, sync_step), max_size=25)


def run(history: list[tuple]) -> list[KeyState]:  # type: ignore[type-arg]
    """Play a history on three replicas of one key; return every state that ever existed.

    All states of one example come from one history, as in a real cluster: states from
    separate histories could hold the same dot with different values, which cannot happen."""
    replicas = [EMPTY, EMPTY, EMPTY]
    seen: list[KeyState] = [EMPTY, EMPTY, EMPTY]
    for kind, x, y, value in history:
        if kind == "write":
            context = seen[y % len(seen)].vector if y >= 0 else {}
            replicas[x], _ = write(replicas[x], context, ACTORS[x], value)
        else:
            replicas[y] = merge(replicas[y], replicas[x])
        seen.extend(replicas)
    return seen


# Every state a history produced, as a sample of six (repeats allowed).
def pick(history: list[tuple], picks: list[int]) -> list[KeyState]:  # type: ignore[type-arg]
    every = run(history)
    return [every[i % len(every)] for i in picks]


state_samples = st.builds(pick, histories, st.lists(st.integers(0, 10_000), min_size=6, max_size=6))


@settings(max_examples=300)
@given(state_samples)
def test_merge_is_commutative_associative_idempotent(sample: list[KeyState]) -> None:
    a, b, c = sample[0], sample[1], sample[2]
    ab = merge(a, b)
    assert ab == merge(b, a)
    assert merge(a, a) == a
    assert merge(a, EMPTY) == a == merge(EMPTY, a)
    assert merge(ab, b) == ab
    assert merge(ab, c) == merge(a, merge(b, c))
    assert merge_all(sample) == merge_all(reversed(sample))


@settings(max_examples=300)
@given(state_samples)
def test_comparisons_agree_with_merge(xs: list[KeyState]) -> None:
    for a in xs:
        for b in xs:
            joined = merge_vectors(a.vector, b.vector)
            assert descends(a.vector, b.vector) == (joined == dict(a.vector))
            assert descends(joined, a.vector) and descends(joined, b.vector)
            order = compare(a.vector, b.vector)
            assert (order is Order.EQUAL) == (dict(a.vector) == dict(b.vector))
            assert (order is Order.CONCURRENT) == (
                not descends(a.vector, b.vector) and not descends(b.vector, a.vector)
            )
            assert merge(a, b).vector == joined
            if order is Order.AFTER:
                # A state that has seen everything another has absorbs it under merge.
                assert merge(a, b).vector == dict(a.vector)


@dataclass
class Writer:
    context: dict[str, int] = field(default_factory=dict)


@settings(max_examples=300)
@given(
    st.integers(1, 4),
    st.lists(
        st.tuples(
            st.sampled_from(["put", "read", "sync"]),
            st.integers(0, 3),  # writer
            st.integers(0, 2),  # replica
            st.integers(0, 2),  # second replica (sync target / read partner)
        ),
        max_size=40,
    ),
)
def test_writers_with_their_own_context_leave_at_most_one_sibling_each(
    writers_count: int, steps: list[tuple[str, int, int, int]]
) -> None:
    """N=3, W=2, R=2: a put is applied at one replica and merged into a second; a read merges
    two distinct replicas. Every read therefore meets every completed write (R + W > N)."""
    replicas = [EMPTY, EMPTY, EMPTY]
    writers = [Writer() for _ in range(writers_count)]
    acknowledged: list[tuple[Dot, dict[str, int]]] = []  # each write's dot and its context
    later_contexts: list[tuple[int, dict[str, int]]] = []
    for step, (kind, w, r, r2) in enumerate(steps):
        writer = writers[w % writers_count]
        if kind == "put":
            context = dict(writer.context)
            replicas[r], dot = write(replicas[r], context, ACTORS[r], b"%d" % step)
            writer.context = dict(replicas[r].vector)  # PutResult.context
            second = r2 if r2 != r else (r + 1) % 3
            replicas[second] = merge(replicas[second], replicas[r])
            acknowledged.append((dot, context))
            later_contexts.append((len(acknowledged) - 1, context))
        elif kind == "read":
            other = r2 if r2 != r else (r + 1) % 3
            writer.context = dict(merge(replicas[r], replicas[other]).vector)  # a read of R=2
        else:
            replicas[r2] = merge(replicas[r2], replicas[r])
        for state in replicas:
            assert len(state.siblings) <= writers_count
    final = merge_all(replicas)
    assert len(final.siblings) <= writers_count
    present = {s.dot for s in final.siblings}
    for index, (dot, _) in enumerate(acknowledged):
        if dot in present:
            continue
        # Gone only because a later write carried a context that had seen it.
        assert covers(final.vector, dot)
        assert any(covers(ctx, dot) for i, ctx in later_contexts if i > index), dot

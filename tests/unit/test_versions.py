"""The dotted-version-vector rules of docs/versions.md, case by case."""

from __future__ import annotations

import pytest

from kvstore.core.versions import (
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


def values(state: KeyState) -> list[bytes | None]:
    return sorted((s.value for s in state.siblings), key=lambda v: (v is None, v or b""))


def clock(vector: dict[str, int], *holes: tuple[str, int]) -> Clock:
    return make_clock(vector, [Dot(a, c) for a, c in holes])


# ---- clocks ----


def test_a_clock_covers_its_vector_minus_its_holes() -> None:
    c = clock({"a": 4, "b": 1}, ("a", 2))
    assert [c.covers(Dot("a", n)) for n in range(1, 6)] == [True, False, True, True, False]
    assert c.covers(Dot("b", 1)) and not c.covers(Dot("b", 2)) and not c.covers(Dot("z", 1))
    assert c.entries == 3
    assert not EMPTY_CLOCK.covers(Dot("a", 1)) and EMPTY_CLOCK.entries == 0


def test_make_clock_is_canonical() -> None:
    # Zero entries go; holes the vector does not cover are moot; a hole at the top of an
    # entry folds into a smaller entry (repeatedly), so equal sets of dots are equal clocks.
    assert make_clock({"a": 2, "z": 0}) == Clock({"a": 2})
    assert clock({"a": 2}, ("a", 3), ("b", 1)) == Clock({"a": 2})
    assert clock({"a": 4}, ("a", 4), ("a", 3), ("a", 1)) == Clock(
        {"a": 2}, frozenset({Dot("a", 1)})
    )
    assert clock({"a": 2, "b": 1}, ("a", 2), ("a", 1)) == Clock({"b": 1})
    assert clock({"a": 1}, ("a", 0)) == Clock({"a": 1})


def test_join_is_the_union_of_what_either_has_seen() -> None:
    a = clock({"x": 5}, ("x", 2), ("x", 3))
    b = clock({"x": 3, "y": 1}, ("x", 3))  # has seen (x, 2), not (x, 3)
    joined = join(a, b)
    assert joined == clock({"x": 5, "y": 1}, ("x", 3))
    assert joined == join(b, a)
    for n in range(1, 7):
        assert joined.covers(Dot("x", n)) == (a.covers(Dot("x", n)) or b.covers(Dot("x", n)))
    assert join(a, EMPTY_CLOCK) == a == join(a, a)
    assert join(Clock({"a": 1}), Clock({"b": 2})) == Clock({"a": 1, "b": 2})


def test_without_takes_dots_out() -> None:
    c = Clock({"a": 3, "b": 1})
    assert without(c, [Dot("a", 2)]) == clock({"a": 3, "b": 1}, ("a", 2))
    assert without(c, [Dot("a", 3), Dot("b", 1)]) == Clock({"a": 2})
    assert without(c, [Dot("z", 1), Dot("a", 9)]) is c  # nothing it covered
    assert without(c, []) is c


# ---- the write rule ----


def test_write_with_empty_context_on_empty_state() -> None:
    state, dot = write(EMPTY, EMPTY_CLOCK, "a", b"v1", timestamp_ms=1234)
    assert dot == Dot("a", 1)
    assert state.clock == Clock({"a": 1})
    assert state.siblings == (Sibling(Dot("a", 1), b"v1"),)
    assert state.siblings[0].timestamp_ms == 1234
    assert state.live_values == [b"v1"]
    assert state.found
    assert EMPTY.vector == {} and EMPTY.siblings == ()  # the input is not mutated


def test_write_does_not_mutate_its_inputs() -> None:
    state, _ = write(EMPTY, EMPTY_CLOCK, "a", b"v1")
    vector = {"a": 1, "b": 4}
    context = Clock(vector)
    before = (dict(state.vector), state.siblings)
    write(state, context, "a", b"v2")
    assert (dict(state.vector), state.siblings) == before
    assert vector == {"a": 1, "b": 4}


def test_two_writes_with_the_same_context_at_the_same_replica_are_siblings() -> None:
    base, _ = write(EMPTY, EMPTY_CLOCK, "a", b"v0")
    s1, d1 = write(base, base.clock, "a", b"x")
    s2, d2 = write(s1, base.clock, "a", b"y")
    assert d1 == Dot("a", 2) and d2 == Dot("a", 3)
    assert values(s2) == [b"x", b"y"]  # v0 replaced, x and y both survive
    assert s2.clock == Clock({"a": 3})


def test_two_writes_with_the_same_context_at_different_replicas_survive_merge() -> None:
    base, _ = write(EMPTY, EMPTY_CLOCK, "a", b"v0")
    replica_b = merge(EMPTY, base)
    at_a, da = write(base, base.clock, "a", b"x")
    at_b, db = write(replica_b, base.clock, "b", b"y")
    assert da == Dot("a", 2) and db == Dot("b", 1)
    for merged in (merge(at_a, at_b), merge(at_b, at_a)):
        assert values(merged) == [b"x", b"y"]
        assert merged.clock == Clock({"a": 2, "b": 1})
        assert {s.dot for s in merged.siblings} == {da, db}


def test_a_write_whose_context_covers_all_siblings_replaces_them() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, _ = write(s, EMPTY_CLOCK, "a", b"y")
    s, _ = write(s, EMPTY_CLOCK, "b", None)
    assert len(s.siblings) == 3
    replaced, dot = write(s, s.clock, "a", b"z")
    assert replaced.siblings == (Sibling(dot, b"z"),)
    assert replaced.clock == Clock({"a": 3, "b": 1})


def test_a_write_whose_context_covers_some_siblings_replaces_only_those() -> None:
    s1, d1 = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s2, d2 = write(s1, EMPTY_CLOCK, "b", b"y")
    s3, d3 = write(s2, s1.clock, "a", b"z")
    assert {s.dot for s in s3.siblings} == {d2, d3}
    assert s3.clock.covers(d1)
    assert values(s3) == [b"y", b"z"]


def test_a_context_with_a_hole_keeps_the_sibling_in_it() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, hidden = write(s, EMPTY_CLOCK, "a", b"y")
    s, _seen = write(s, EMPTY_CLOCK, "a", b"z")
    new, dot = write(s, without(s.clock, [hidden]), "a", b"w")
    assert {sib.dot for sib in new.siblings} == {hidden, dot}
    assert new.clock == Clock({"a": 4})  # the replica had seen it all


def test_a_write_without_context_on_an_existing_key_adds_a_sibling() -> None:
    s, d1 = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, d2 = write(s, EMPTY_CLOCK, "a", b"y")
    assert {sib.dot for sib in s.siblings} == {d1, d2}
    assert values(s) == [b"x", b"y"]


def test_a_context_from_another_key_history_drops_nothing_it_has_not_seen() -> None:
    s, d1 = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, d2 = write(s, Clock({"c": 7}), "a", b"y")
    assert {sib.dot for sib in s.siblings} == {d1, d2}
    assert s.clock == Clock({"a": 2, "c": 7})


def test_tombstones_are_hidden_from_live_values() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, _ = write(s, EMPTY_CLOCK, "b", None)
    assert len(s.siblings) == 2
    assert s.live_values == [b"x"]
    assert s.found
    assert [sib.is_tombstone for sib in s.siblings] == [False, True]


def test_all_tombstones_mean_not_found_but_the_context_remains() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    deleted, _ = write(s, s.clock, "a", None)
    assert deleted.live_values == []
    assert not deleted.found
    assert deleted.clock == Clock({"a": 2})
    assert len(deleted.siblings) == 1 and deleted.siblings[0].is_tombstone
    # Two concurrent deletes: still not found.
    both, _ = write(deleted, EMPTY_CLOCK, "b", None)
    assert not both.found and len(both.siblings) == 2
    # A write with the context of the delete replaces the tombstone.
    back, _ = write(deleted, deleted.clock, "a", b"again")
    assert back.live_values == [b"again"] and len(back.siblings) == 1
    assert not EMPTY.found


def test_an_empty_value_is_live_not_a_tombstone() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"")
    assert s.found
    assert s.live_values == [b""]


@pytest.mark.parametrize(
    ("state_counter", "context_counter", "expected"),
    [(0, 0, 1), (3, 0, 4), (0, 5, 6), (3, 5, 6), (7, 2, 8)],
)
def test_new_dot_counter_exceeds_state_and_context(
    state_counter: int, context_counter: int, expected: int
) -> None:
    state = canonical_state(make_clock({"a": state_counter, "b": 1}), [Sibling(Dot("b", 1), b"y")])
    new, dot = write(state, make_clock({"a": context_counter}), "a", b"x")
    assert dot == Dot("a", expected)
    assert new.vector["a"] == expected
    assert dot in {s.dot for s in new.siblings}


def test_clock_after_write_is_the_union_of_state_and_context_plus_the_new_dot() -> None:
    state = canonical_state(Clock({"a": 2, "b": 5}), [Sibling(Dot("b", 5), b"y")])
    new, dot = write(state, Clock({"b": 3, "c": 9}), "a", b"x")
    assert new.clock == Clock({"a": 3, "b": 5, "c": 9})
    assert dot == Dot("a", 3)
    assert values(new) == [b"x", b"y"]  # b:5 not covered by the context's b:3


def test_a_stale_replica_keeps_the_holes_of_the_context_it_was_written_with() -> None:
    # The context has seen (a, 1) and (a, 3) but not (a, 2); the replica has seen no `a`.
    stale, _ = write(EMPTY, EMPTY_CLOCK, "b", b"other")
    new, _dot = write(stale, clock({"a": 3}, ("a", 2)), "b", b"w")
    assert new.clock == clock({"a": 3, "b": 2}, ("a", 2))
    assert not new.clock.covers(Dot("a", 2)) and new.clock.covers(Dot("a", 3))
    # A hole the replica had seen is no hole of the result.
    seen = canonical_state(Clock({"a": 2}), [Sibling(Dot("a", 2), b"B1")])
    known, _ = write(seen, clock({"a": 3}, ("a", 2)), "b", b"w")
    assert known.clock == Clock({"a": 3, "b": 1}) and len(known.siblings) == 2


# ---- the context a put returns ----


def issue_sequence() -> tuple[KeyState, Clock, Dot]:
    """x0; B1 and A1 both with x0's context, on one replica: A1's put context."""
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x0")
    ctx0 = s.clock
    s, _ = write(s, ctx0, "a", b"B1")
    s, a1 = write(s, ctx0, "a", b"A1")
    return s, put_context(s, a1), a1


def test_a_put_context_covers_its_write_and_context_never_a_concurrent_sibling() -> None:
    state, context, a1 = issue_sequence()
    b1 = Dot("a", 2)
    assert context == clock({"a": 3}, ("a", 2))
    assert context.covers(a1) and context.covers(Dot("a", 1)) and not context.covers(b1)
    # A chained put replaces A1 only; B1, never shown to A, survives every link.
    for n in range(5):
        state, dot = write(state, context, "a", b"A%d" % (n + 2))
        context = put_context(state, dot)
        assert values(state) == [b"A%d" % (n + 2), b"B1"]
        assert context.holes == {b1}  # the bound: one hole per sibling A was not shown


def test_a_put_context_through_a_stale_replica_keeps_the_sibling_alive_everywhere() -> None:
    at_a, context, _ = issue_sequence()  # replica a: x0, B1, A1
    # Replica c saw only x0; A's next put goes through it.
    at_c = canonical_state(Clock({"a": 1}), [Sibling(Dot("a", 1), b"x0")])
    at_c, a2 = write(at_c, context, "c", b"A2")
    assert values(at_c) == [b"A2"]
    for merged in (merge(at_a, at_c), merge(at_c, at_a)):
        assert values(merged) == [b"A2", b"B1"]  # A1 replaced, B1 kept
    chained = put_context(at_c, a2)
    assert not chained.covers(Dot("a", 2)) and chained.covers(Dot("a", 3))


def test_a_put_context_of_a_lone_write_is_the_replica_clock() -> None:
    s, d1 = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    assert put_context(s, d1) == s.clock
    s, d2 = write(s, put_context(s, d1), "a", b"y")
    assert put_context(s, d2) == s.clock == Clock({"a": 2})


def test_a_put_context_leaves_out_a_concurrent_tombstone_too() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, deletion = write(s, EMPTY_CLOCK, "b", None)  # a delete the writer did not see
    s, dot = write(s, Clock({"a": 1}), "a", b"y")
    context = put_context(s, dot)
    assert not context.covers(deletion) and context.covers(dot)


# ---- merge ----


def test_merge_drops_a_sibling_the_other_side_has_seen() -> None:
    a1, d1 = write(EMPTY, EMPTY_CLOCK, "a", b"old")
    b1 = merge(EMPTY, a1)  # replicated to b
    b2, d2 = write(b1, b1.clock, "b", b"new")  # b overwrites, having seen d1
    assert b2.siblings == (Sibling(d2, b"new"),)
    for merged in (merge(a1, b2), merge(b2, a1)):
        assert merged.siblings == (Sibling(d2, b"new"),)
        assert merged.clock == Clock({"a": 1, "b": 1})
        assert merged.clock.covers(d1)


def test_merge_keeps_a_sibling_in_the_other_side_hole() -> None:
    mine = canonical_state(Clock({"a": 2}), [Sibling(Dot("a", 2), b"B1")])
    theirs = canonical_state(clock({"a": 3, "c": 1}, ("a", 2)), [Sibling(Dot("c", 1), b"A2")])
    for merged in (merge(mine, theirs), merge(theirs, mine)):
        assert values(merged) == [b"A2", b"B1"]
        assert merged.clock == Clock({"a": 3, "c": 1})  # the hole is filled


def test_merge_keeps_concurrent_siblings_and_shared_ones() -> None:
    base, d0 = write(EMPTY, EMPTY_CLOCK, "a", b"base")
    at_a, da = write(base, EMPTY_CLOCK, "a", b"x")  # keeps d0: empty context
    at_b, db = write(merge(EMPTY, base), EMPTY_CLOCK, "b", b"y")
    merged = merge(at_a, at_b)
    assert {s.dot for s in merged.siblings} == {d0, da, db}
    assert merged.clock == Clock({"a": 2, "b": 1})
    # Siblings are canonical: sorted by dot.
    assert list(merged.siblings) == sorted(merged.siblings, key=lambda s: s.dot)


def test_merge_of_disjoint_histories_keeps_everything() -> None:
    a, da = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    b, db = write(EMPTY, EMPTY_CLOCK, "b", b"y")
    assert merge(a, b) == merge(b, a)
    assert {s.dot for s in merge(a, b).siblings} == {da, db}


def test_merge_with_empty_and_itself() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    s, _ = write(s, EMPTY_CLOCK, "b", None)
    assert merge(s, EMPTY) == s == merge(EMPTY, s)
    assert merge(s, s) == s
    copy = KeyState(clock=Clock(dict(s.vector)), siblings=tuple(s.siblings))
    assert merge(s, copy) == s


def test_merge_all() -> None:
    a, da = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    b, db = write(EMPTY, EMPTY_CLOCK, "b", b"y")
    c, dc = write(b, b.clock, "c", b"z")
    assert merge_all([]) == EMPTY
    assert merge_all([a]) == a
    merged = merge_all([a, b, c])
    assert {s.dot for s in merged.siblings} == {da, dc}  # c replaced b's write
    assert merged.clock.covers(db)
    assert merged == merge_all([c, a, b])


def test_canonical_state_sorts_siblings() -> None:
    s1 = Sibling(Dot("b", 1), b"y")
    s2 = Sibling(Dot("a", 2), b"x")
    state = canonical_state(Clock({"a": 2, "b": 1}), [s1, s2])
    assert state.siblings == (s2, s1)
    assert state == canonical_state(Clock({"b": 1, "a": 2}), [s2, s1])


def test_sibling_equality_ignores_timestamps() -> None:
    assert Sibling(Dot("a", 1), b"x", 1) == Sibling(Dot("a", 1), b"x", 999)
    assert Sibling(Dot("a", 1), b"x") != Sibling(Dot("a", 1), None)


# ---- is_stale ----


def test_is_stale() -> None:
    a, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    b, _ = write(merge(EMPTY, a), a.clock, "b", b"y")
    merged = merge(a, b)
    assert is_stale(a, merged)  # lacks b's write
    assert not is_stale(b, merged)  # b has seen everything
    assert not is_stale(merged, merged)
    assert is_stale(EMPTY, merged)
    assert not is_stale(EMPTY, EMPTY)
    # Only a clock difference: a replica that has the same siblings but an older clock.
    c, _ = write(EMPTY, EMPTY_CLOCK, "c", b"z")
    d = merge(c, KeyState(Clock({"q": 4}), ()))
    assert d.siblings == c.siblings
    assert is_stale(c, d) and not is_stale(d, c)
    # ... or one with a hole the other has filled.
    e = merge(c, KeyState(clock({"q": 4}, ("q", 2)), ()))
    assert is_stale(e, d) and not is_stale(d, e)


def test_a_replica_with_a_concurrent_sibling_is_stale_too() -> None:
    a, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    b, _ = write(EMPTY, EMPTY_CLOCK, "b", b"y")
    merged = merge(a, b)
    assert is_stale(a, merged) and is_stale(b, merged)


def test_merge_vectors_is_pointwise_max_and_pure() -> None:
    a = {"a": 3, "b": 1}
    b = {"b": 4, "c": 2}
    assert merge_vectors(a, b) == {"a": 3, "b": 4, "c": 2}
    assert merge_vectors(b, a) == {"a": 3, "b": 4, "c": 2}
    assert a == {"a": 3, "b": 1} and b == {"b": 4, "c": 2}
    assert merge_vectors({}, {}) == {}


def test_states_are_immutable() -> None:
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    with pytest.raises(AttributeError):
        s.siblings = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.siblings[0].value = b"y"  # type: ignore[misc]

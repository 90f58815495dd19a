"""The dotted-version-vector rules of shared/notes/versions.md, case by case."""

from __future__ import annotations

import pytest

from kvstore.core.versions import (
    EMPTY,
    Dot,
    KeyState,
    Order,
    Sibling,
    canonical_state,
    compare,
    covers,
    descends,
    is_stale,
    merge,
    merge_all,
    merge_vectors,
    write,
)


def values(state: KeyState) -> list[bytes | None]:
    return sorted((s.value for s in state.siblings), key=lambda v: (v is None, v or b""))


# ---- the write rule ----


def test_write_with_empty_context_on_empty_state() -> None:
    state, dot = write(EMPTY, {}, "a", b"v1", timestamp_ms=1234)
    assert dot == Dot("a", 1)
    assert state.vector == {"a": 1}
    assert state.siblings == (Sibling(Dot("a", 1), b"v1"),)
    assert state.siblings[0].timestamp_ms == 1234
    assert state.live_values == [b"v1"]
    assert state.found
    assert EMPTY.vector == {} and EMPTY.siblings == ()  # the input is not mutated


def test_write_does_not_mutate_its_inputs() -> None:
    state, _ = write(EMPTY, {}, "a", b"v1")
    context = {"a": 1, "b": 4}
    before = (dict(state.vector), state.siblings)
    write(state, context, "a", b"v2")
    assert (dict(state.vector), state.siblings) == before
    assert context == {"a": 1, "b": 4}


def test_two_writes_with_the_same_context_at_the_same_replica_are_siblings() -> None:
    base, _ = write(EMPTY, {}, "a", b"v0")
    context = dict(base.vector)
    s1, d1 = write(base, context, "a", b"x")
    s2, d2 = write(s1, context, "a", b"y")
    assert d1 != d2
    assert d1 == Dot("a", 2) and d2 == Dot("a", 3)
    assert values(s2) == [b"x", b"y"]  # v0 replaced, x and y both survive
    assert s2.vector == {"a": 3}


def test_two_writes_with_the_same_context_at_different_replicas_survive_merge() -> None:
    base, _ = write(EMPTY, {}, "a", b"v0")
    replica_b = merge(EMPTY, base)
    context = dict(base.vector)
    at_a, da = write(base, context, "a", b"x")
    at_b, db = write(replica_b, context, "b", b"y")
    assert da == Dot("a", 2) and db == Dot("b", 1)
    for merged in (merge(at_a, at_b), merge(at_b, at_a)):
        assert values(merged) == [b"x", b"y"]
        assert merged.vector == {"a": 2, "b": 1}
        assert {s.dot for s in merged.siblings} == {da, db}


def test_a_write_whose_context_covers_all_siblings_replaces_them() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    s, _ = write(s, {}, "a", b"y")
    s, _ = write(s, {}, "b", None)
    assert len(s.siblings) == 3
    replaced, dot = write(s, s.vector, "a", b"z")
    assert replaced.siblings == (Sibling(dot, b"z"),)
    assert replaced.vector == {"a": 3, "b": 1}


def test_a_write_whose_context_covers_some_siblings_replaces_only_those() -> None:
    s1, d1 = write(EMPTY, {}, "a", b"x")
    seen = dict(s1.vector)
    s2, d2 = write(s1, {}, "b", b"y")
    s3, d3 = write(s2, seen, "a", b"z")
    assert {s.dot for s in s3.siblings} == {d2, d3}
    assert covers(s3.vector, d1)
    assert values(s3) == [b"y", b"z"]


def test_a_write_without_context_on_an_existing_key_adds_a_sibling() -> None:
    s, d1 = write(EMPTY, {}, "a", b"x")
    s, d2 = write(s, {}, "a", b"y")
    assert {sib.dot for sib in s.siblings} == {d1, d2}
    assert values(s) == [b"x", b"y"]


def test_a_context_from_another_key_history_drops_nothing_it_has_not_seen() -> None:
    s, d1 = write(EMPTY, {}, "a", b"x")
    s, d2 = write(s, {"c": 7}, "a", b"y")
    assert {sib.dot for sib in s.siblings} == {d1, d2}
    assert s.vector == {"a": 2, "c": 7}


def test_tombstones_are_hidden_from_live_values() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    s, _ = write(s, {}, "b", None)
    assert len(s.siblings) == 2
    assert s.live_values == [b"x"]
    assert s.found
    assert [sib.is_tombstone for sib in s.siblings] == [False, True]


def test_all_tombstones_mean_not_found_but_the_context_remains() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    deleted, _ = write(s, s.vector, "a", None)
    assert deleted.live_values == []
    assert not deleted.found
    assert deleted.vector == {"a": 2}
    assert len(deleted.siblings) == 1 and deleted.siblings[0].is_tombstone
    # Two concurrent deletes: still not found.
    both, _ = write(deleted, {}, "b", None)
    assert not both.found and len(both.siblings) == 2
    # A write with the context of the delete replaces the tombstone.
    back, _ = write(deleted, deleted.vector, "a", b"again")
    assert back.live_values == [b"again"] and len(back.siblings) == 1
    assert not EMPTY.found


def test_an_empty_value_is_live_not_a_tombstone() -> None:
    s, _ = write(EMPTY, {}, "a", b"")
    assert s.found
    assert s.live_values == [b""]


@pytest.mark.parametrize(
    ("state_counter", "context_counter", "expected"),
    [(0, 0, 1), (3, 0, 4), (0, 5, 6), (3, 5, 6), (7, 2, 8)],
)
def test_new_dot_counter_exceeds_state_and_context(
    state_counter: int, context_counter: int, expected: int
) -> None:
    state = canonical_state({"a": state_counter, "b": 1}, [Sibling(Dot("b", 1), b"y")])
    context = {"a": context_counter} if context_counter else {}
    new, dot = write(state, context, "a", b"x")
    assert dot == Dot("a", expected)
    assert new.vector["a"] == expected
    assert dot in {s.dot for s in new.siblings}


def test_vector_after_write_is_merge_of_state_and_context_plus_one() -> None:
    state = canonical_state({"a": 2, "b": 5}, [Sibling(Dot("b", 5), b"y")])
    new, dot = write(state, {"b": 3, "c": 9}, "a", b"x")
    assert new.vector == {"a": 3, "b": 5, "c": 9}
    assert dot == Dot("a", 3)
    assert values(new) == [b"x", b"y"]  # b:5 not covered by the context's b:3


# ---- merge ----


def test_merge_drops_a_sibling_the_other_side_has_seen() -> None:
    a1, d1 = write(EMPTY, {}, "a", b"old")
    b1 = merge(EMPTY, a1)  # replicated to b
    b2, d2 = write(b1, b1.vector, "b", b"new")  # b overwrites, having seen d1
    assert b2.siblings == (Sibling(d2, b"new"),)
    for merged in (merge(a1, b2), merge(b2, a1)):
        assert merged.siblings == (Sibling(d2, b"new"),)
        assert merged.vector == {"a": 1, "b": 1}
        assert covers(merged.vector, d1)


def test_merge_keeps_concurrent_siblings_and_shared_ones() -> None:
    base, d0 = write(EMPTY, {}, "a", b"base")
    at_a, da = write(base, {}, "a", b"x")  # keeps d0: empty context
    at_b, db = write(merge(EMPTY, base), {}, "b", b"y")
    merged = merge(at_a, at_b)
    assert {s.dot for s in merged.siblings} == {d0, da, db}
    assert merged.vector == {"a": 2, "b": 1}
    # Siblings are canonical: sorted by dot.
    assert list(merged.siblings) == sorted(merged.siblings, key=lambda s: s.dot)


def test_merge_of_disjoint_histories_keeps_everything() -> None:
    a, da = write(EMPTY, {}, "a", b"x")
    b, db = write(EMPTY, {}, "b", b"y")
    assert merge(a, b) == merge(b, a)
    assert {s.dot for s in merge(a, b).siblings} == {da, db}


def test_merge_with_empty_and_itself() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    s, _ = write(s, {}, "b", None)
    assert merge(s, EMPTY) == s == merge(EMPTY, s)
    assert merge(s, s) == s
    copy = KeyState(vector=dict(s.vector), siblings=tuple(s.siblings))
    assert merge(s, copy) == s


def test_merge_all() -> None:
    a, da = write(EMPTY, {}, "a", b"x")
    b, db = write(EMPTY, {}, "b", b"y")
    c, dc = write(b, b.vector, "c", b"z")
    assert merge_all([]) == EMPTY
    assert merge_all([a]) == a
    merged = merge_all([a, b, c])
    assert {s.dot for s in merged.siblings} == {da, dc}  # c replaced b's write
    assert covers(merged.vector, db)
    assert merged == merge_all([c, a, b])


def test_canonical_state_drops_zero_entries_and_sorts() -> None:
    s1 = Sibling(Dot("b", 1), b"y")
    s2 = Sibling(Dot("a", 2), b"x")
    state = canonical_state({"a": 2, "b": 1, "z": 0}, [s1, s2])
    assert state.vector == {"a": 2, "b": 1}
    assert state.siblings == (s2, s1)
    assert state == canonical_state({"b": 1, "a": 2}, [s2, s1])


def test_sibling_equality_ignores_timestamps() -> None:
    assert Sibling(Dot("a", 1), b"x", 1) == Sibling(Dot("a", 1), b"x", 999)
    assert Sibling(Dot("a", 1), b"x") != Sibling(Dot("a", 1), None)


# ---- is_stale ----


def test_is_stale() -> None:
    a, _ = write(EMPTY, {}, "a", b"x")
    b, _ = write(merge(EMPTY, a), a.vector, "b", b"y")
    merged = merge(a, b)
    assert is_stale(a, merged)  # lacks b's write
    assert not is_stale(b, merged)  # b has seen everything
    assert not is_stale(merged, merged)
    assert is_stale(EMPTY, merged)
    assert not is_stale(EMPTY, EMPTY)
    # Only a vector difference: a replica that has the same siblings but an older vector.
    c, _ = write(EMPTY, {}, "c", b"z")
    d = merge(c, KeyState({"q": 4}, ()))
    assert d.siblings == c.siblings
    assert is_stale(c, d) and not is_stale(d, c)


def test_a_replica_with_a_concurrent_sibling_is_stale_too() -> None:
    a, _ = write(EMPTY, {}, "a", b"x")
    b, _ = write(EMPTY, {}, "b", b"y")
    merged = merge(a, b)
    assert is_stale(a, merged) and is_stale(b, merged)


# ---- vector comparisons ----


def test_covers() -> None:
    assert covers({"a": 3}, Dot("a", 3))
    assert covers({"a": 3}, Dot("a", 1))
    assert not covers({"a": 3}, Dot("a", 4))
    assert not covers({"b": 3}, Dot("a", 1))
    assert not covers({}, Dot("a", 1))


def test_merge_vectors_is_pointwise_max_and_pure() -> None:
    a = {"a": 3, "b": 1}
    b = {"b": 4, "c": 2}
    assert merge_vectors(a, b) == {"a": 3, "b": 4, "c": 2}
    assert merge_vectors(b, a) == {"a": 3, "b": 4, "c": 2}
    assert a == {"a": 3, "b": 1} and b == {"b": 4, "c": 2}
    assert merge_vectors({}, {}) == {}


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ({}, {}, Order.EQUAL),
        ({"a": 1}, {"a": 1}, Order.EQUAL),
        ({"a": 1, "b": 0}, {"a": 1}, Order.EQUAL),  # a zero entry is no entry
        ({"a": 2}, {"a": 1}, Order.AFTER),
        ({"a": 1}, {}, Order.AFTER),
        ({"a": 1, "b": 1}, {"a": 1}, Order.AFTER),
        ({"a": 1}, {"a": 2}, Order.BEFORE),
        ({}, {"b": 1}, Order.BEFORE),
        ({"a": 1}, {"b": 1}, Order.CONCURRENT),
        ({"a": 2, "b": 1}, {"a": 1, "b": 2}, Order.CONCURRENT),
    ],
)
def test_compare_and_descends(a: dict[str, int], b: dict[str, int], order: Order) -> None:
    assert compare(a, b) is order
    mirrored = {
        Order.EQUAL: Order.EQUAL,
        Order.AFTER: Order.BEFORE,
        Order.BEFORE: Order.AFTER,
        Order.CONCURRENT: Order.CONCURRENT,
    }[order]
    assert compare(b, a) is mirrored
    assert descends(a, b) == (order in (Order.EQUAL, Order.AFTER))
    assert descends(b, a) == (order in (Order.EQUAL, Order.BEFORE))


def test_order_members() -> None:
    assert {o.name for o in Order} == {"EQUAL", "BEFORE", "AFTER", "CONCURRENT"}


def test_states_are_immutable() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    with pytest.raises(AttributeError):
        s.siblings = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.siblings[0].value = b"y"  # type: ignore[misc]

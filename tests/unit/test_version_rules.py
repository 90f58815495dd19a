"""The DVV write and merge rules of shared/notes/versions.md, case by case."""

from __future__ import annotations

from kvstore.core.versions import (
    EMPTY,
    Dot,
    Order,
    compare,
    covers,
    descends,
    is_stale,
    merge,
    merge_all,
    merge_vectors,
    write,
)


def test_first_write_gets_dot_one() -> None:
    state, dot = write(EMPTY, {}, "a", b"v")
    assert dot == Dot("a", 1)
    assert state.vector == {"a": 1} and state.live_values == [b"v"] and state.found


def test_same_context_twice_at_one_replica_gives_two_siblings() -> None:
    base, _ = write(EMPTY, {}, "a", b"base")
    one, _ = write(base, base.vector, "a", b"x")
    two, _ = write(one, base.vector, "a", b"y")
    assert sorted(two.live_values) == [b"x", b"y"]


def test_same_context_at_two_replicas_gives_two_siblings_after_merge() -> None:
    base, _ = write(EMPTY, {}, "a", b"base")
    at_a, _ = write(base, base.vector, "a", b"x")
    at_b, _ = write(base, base.vector, "b", b"y")
    merged = merge(at_a, at_b)
    assert sorted(merged.live_values) == [b"x", b"y"]
    assert merged.vector == {"a": 2, "b": 1}


def test_context_that_saw_every_sibling_replaces_them() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    s, _ = write(s, {}, "b", b"y")
    assert len(s.siblings) == 2
    resolved, _ = write(s, s.vector, "a", b"z")
    assert resolved.live_values == [b"z"]


def test_write_without_context_on_existing_key_adds_a_sibling() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    s, _ = write(s, {}, "a", b"y")
    assert sorted(s.live_values) == [b"x", b"y"]


def test_tombstones_are_hidden_but_keep_history() -> None:
    s, _ = write(EMPTY, {}, "a", b"x")
    deleted, _ = write(s, s.vector, "a", None)
    assert deleted.live_values == [] and not deleted.found
    assert deleted.siblings[0].is_tombstone
    concurrent, _ = write(deleted, {}, "a", b"y")  # a blind write next to the tombstone
    assert concurrent.live_values == [b"y"] and concurrent.found


def test_new_counter_exceeds_both_state_and_context() -> None:
    # A context carrying a higher counter for this actor than the state (a replica that lost
    # its data) must not make the new dot collide with one that exists elsewhere.
    state, dot = write(EMPTY, {"a": 7}, "a", b"v")
    assert dot == Dot("a", 8)
    state2, dot2 = write(state, {}, "a", b"w")
    assert dot2 == Dot("a", 9) and state2.vector["a"] == 9


def test_merge_drops_what_the_other_side_has_seen_and_keeps_the_concurrent() -> None:
    s, _ = write(EMPTY, {}, "a", b"old")
    replaced, _ = write(s, s.vector, "b", b"new")  # b saw a's write and replaced it
    concurrent, _ = write(EMPTY, {}, "c", b"other")
    merged = merge(s, merge(replaced, concurrent))
    assert sorted(merged.live_values) == [b"new", b"other"]
    assert merge(replaced, s) == replaced
    assert is_stale(s, merged) and not is_stale(merged, merged)
    assert merge_all([s, replaced, concurrent]) == merged


def test_vector_comparisons() -> None:
    assert covers({"a": 2}, Dot("a", 2)) and not covers({"a": 2}, Dot("a", 3))
    assert not covers({}, Dot("b", 1))
    assert descends({"a": 2, "b": 1}, {"a": 1}) and not descends({"a": 1}, {"a": 2})
    assert compare({"a": 1}, {"a": 1}) is Order.EQUAL
    assert compare({"a": 1}, {"a": 2}) is Order.BEFORE
    assert compare({"a": 2}, {"a": 1}) is Order.AFTER
    assert compare({"a": 1}, {"b": 1}) is Order.CONCURRENT
    assert merge_vectors({"a": 1, "b": 5}, {"a": 3}) == {"a": 3, "b": 5}

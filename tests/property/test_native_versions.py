"""The native DVV rules (kvstore._native, as kvstore.core.versions re-exports them) against
their pure-Python reference (kvstore.core.versions_reference), on random input.

Inputs: states reachable through histories of writes and merges (the strategies of
test_version_laws), random canonical states (any clock, any siblings it covers), and raw
values built without make_clock (zero entries, holes anywhere, unsorted or repeated
siblings): the native code runs the reference's steps, so it must agree even where no
caller goes. "Agree" is stricter than ==: the same vector order, the same sibling objects'
timestamps (equality ignores them), and the same object where the reference hands an
input back unchanged.

The data model's classes are held to the frozen dataclasses they replaced (restated
here): equality, hashes, Dot's order, reprs, immutability.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_version_laws import ACTORS, REPLICAS, contexts, samples

from kvstore.core import versions as native
from kvstore.core import versions_reference as ref
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, Clock, Dot, KeyState, Sibling

EQUIVALENCE = settings(max_examples=300, deadline=None)

# Actor ids sort in interesting ways: ASCII, a prefix of another, non-ASCII, astral.
actor_ids = st.sampled_from(["a", "b", "ab", "node-c/3", "n\u00e9/2", "\u2603", "\U0001f600"])
values = st.one_of(st.none(), st.binary(max_size=3))
stamps = st.integers(-(2**63), 2**63 - 1)
# Few distinct ids, so that twins (siblings of one write id) are common.
write_ids = st.sampled_from([b"", b"", b"X", b"Y", bytes(range(16))])


def same_clock(got: Clock, expected: Clock) -> None:
    assert got == expected
    assert list(got.vector.items()) == list(expected.vector.items())
    assert got.holes == expected.holes


def same_state(got: KeyState, expected: KeyState) -> None:
    same_clock(got.clock, expected.clock)
    assert type(got.siblings) is tuple
    assert [(s.dot, s.value, s.timestamp_ms, s.write_id) for s in got.siblings] == [
        (s.dot, s.value, s.timestamp_ms, s.write_id) for s in expected.siblings
    ]


def same_outcome(
    native_call: Callable[[], Any], reference_call: Callable[[], Any]
) -> tuple[Any, Any]:
    """Both calls return, or both raise the same exception type."""
    try:
        expected = reference_call()
    except Exception as exc:
        with pytest.raises(type(exc)):
            native_call()
        return None, None
    return native_call(), expected


# ---- random canonical states: any clock, any siblings it covers ----


@st.composite
def clocks(draw: st.DrawFn, counters: int = 6, max_actors: int = 4) -> Clock:
    vector = draw(st.dictionaries(actor_ids, st.integers(1, counters), max_size=max_actors))
    holes = draw(st.lists(st.builds(Dot, actor_ids, st.integers(1, counters)), max_size=6))
    return ref.make_clock(vector, holes)


def covered_dots(clock: Clock) -> list[Dot]:
    """Dots the clock covers: all of them under small entries, a few near the ends and
    the holes of large ones (counters may be 2**63)."""
    dots = []
    for actor, top in clock.vector.items():
        counters = set(range(1, top + 1)) if top <= 64 else {1, 2, top - 1, top}
        counters.update(h.counter + d for h in clock.holes if h.actor == actor for d in (-1, 1))
        for n in sorted(counters):
            if 1 <= n <= top and Dot(actor, n) not in clock.holes:
                dots.append(Dot(actor, n))
    return dots


@st.composite
def states(draw: st.DrawFn, counters: int = 6) -> KeyState:
    clock = draw(clocks(counters))
    dots = covered_dots(clock)
    chosen = draw(st.lists(st.sampled_from(dots), unique=True, max_size=6)) if dots else []
    siblings = [Sibling(d, draw(values), draw(stamps), draw(write_ids)) for d in chosen]
    return ref.canonical_state(clock, siblings)


# ---- raw values: what the constructors allow, canonical or not ----

raw_dots = st.builds(Dot, actor_ids, st.integers(-2, 7))


@st.composite
def raw_clocks(draw: st.DrawFn) -> Clock:
    vector = draw(st.dictionaries(actor_ids, st.integers(-1, 6), max_size=4))
    return Clock(vector, frozenset(draw(st.lists(raw_dots, max_size=5))))


@st.composite
def raw_states(draw: st.DrawFn) -> KeyState:
    siblings = draw(st.lists(st.builds(Sibling, raw_dots, values, stamps, write_ids), max_size=6))
    return KeyState(draw(raw_clocks()), tuple(siblings))


any_clocks = st.one_of(clocks(), raw_clocks())
any_states = st.one_of(states(), raw_states())


# ---- the rules ----


@EQUIVALENCE
@given(any_clocks, any_clocks)
def test_join_merge_vectors_and_make_clock_match_the_reference(a: Clock, b: Clock) -> None:
    same_clock(native.join(a, b), ref.join(a, b))
    assert list(native.merge_vectors(a.vector, b.vector).items()) == list(
        ref.merge_vectors(a.vector, b.vector).items()
    )
    holes = [*a.holes, *b.holes]
    same_clock(native.make_clock(a.vector, holes), ref.make_clock(a.vector, holes))
    same_clock(native.make_clock(b.vector), ref.make_clock(b.vector))


@EQUIVALENCE
@given(any_clocks, st.lists(raw_dots, max_size=6))
def test_without_and_covers_match_the_reference(clock: Clock, dots: list[Dot]) -> None:
    got, expected = native.without(clock, dots), ref.without(clock, dots)
    same_clock(got, expected)
    assert (got is clock) == (expected is clock)
    for dot in dots:
        assert clock.covers(dot) == ref.covers(clock, dot)


@EQUIVALENCE
@given(
    any_states, any_clocks, st.sampled_from(["a", "b", "\u2603", "z"]), values, stamps, write_ids
)
def test_write_matches_the_reference(
    state: KeyState, context: Clock, actor: str, value: bytes | None, stamp: int, write_id: bytes
) -> None:
    got, got_dot = native.write(state, context, actor, value, stamp, write_id)
    expected, expected_dot = ref.write(
        state, context, actor, value, timestamp_ms=stamp, write_id=write_id
    )
    same_state(got, expected)
    assert got_dot == expected_dot
    same_clock(native.put_context(got, got_dot), ref.put_context(expected, expected_dot))


@EQUIVALENCE
@given(contexts(), st.sampled_from(range(REPLICAS)), values)
def test_write_and_put_context_match_the_reference_on_reachable_states(
    sample: tuple[KeyState, Clock], replica: int, value: bytes | None
) -> None:
    state, context = sample
    got, dot = native.write(state, context, ACTORS[replica], value, 17)
    expected, expected_dot = ref.write(state, context, ACTORS[replica], value, 17)
    same_state(got, expected)
    assert dot == expected_dot
    same_clock(native.put_context(got, dot), ref.put_context(expected, dot))
    for sibling in got.siblings:  # the context of an older write of the same state
        same_clock(native.put_context(got, sibling.dot), ref.put_context(expected, sibling.dot))


@EQUIVALENCE
@given(any_states, any_states)
def test_merge_and_is_stale_match_the_reference(a: KeyState, b: KeyState) -> None:
    same_state(native.merge(a, b), ref.merge(a, b))
    same_state(native.merge(b, a), ref.merge(b, a))
    assert native.merge(a, a) is a is ref.merge(a, a)
    assert native.is_stale(a, b) == ref.is_stale(a, b)
    assert native.is_stale(b, a) == ref.is_stale(b, a)
    same_state(native.merge_all([a, b, a]), ref.merge_all([a, b, a]))


@EQUIVALENCE
@given(samples())
def test_merge_matches_the_reference_on_reachable_states(
    sample: tuple[list[KeyState], dict[Dot, bytes | None]],
) -> None:
    (a, b, c), _ = sample
    same_state(native.merge(a, b), ref.merge(a, b))
    merged = ref.merge_all([a, b, c])
    same_state(native.merge_all([a, b, c]), merged)
    for state in (a, b, c, EMPTY):
        assert native.is_stale(state, merged) == ref.is_stale(state, merged)


@settings(max_examples=100, deadline=None)
@given(states(counters=40), states(counters=40))
def test_merge_of_many_siblings_matches_the_reference(a: KeyState, b: KeyState) -> None:
    # Past 8 x 8 siblings the native merge looks dots up in sets rather than pairwise.
    many = [Sibling(Dot("m", n), b"%d" % n, n) for n in range(1, 31)]
    a = ref.merge(a, ref.canonical_state(Clock({"m": 30}), many[::2]))
    b = ref.merge(b, ref.canonical_state(Clock({"m": 40}), many[1::2]))
    same_state(native.merge(a, b), ref.merge(a, b))
    same_state(native.merge(b, a), ref.merge(b, a))
    assert native.is_stale(a, b) == ref.is_stale(a, b)


@EQUIVALENCE
@given(any_clocks, st.lists(st.builds(Sibling, raw_dots, values, stamps, write_ids), max_size=40))
def test_canonical_state_sorts_as_the_reference(clock: Clock, siblings: list[Sibling]) -> None:
    # Up to 16 siblings are insertion-sorted, more go through list.sort: both stable.
    same_state(native.canonical_state(clock, siblings), ref.canonical_state(clock, siblings))
    same_state(native.canonical_state(clock, iter(siblings)), ref.canonical_state(clock, siblings))


def test_counters_past_uint64_and_below_one_follow_python_ints() -> None:
    # The reference has no bound of its own (codec and replica check them); nor has native.
    huge = KeyState(Clock({"a": 2**70}), (Sibling(Dot("a", 2**70), b"x"),))
    got, dot = native.write(huge, Clock({"a": 2**80}), "a", b"y")
    expected, _ = ref.write(huge, Clock({"a": 2**80}), "a", b"y")
    same_state(got, expected)
    assert dot == Dot("a", 2**80 + 1)
    assert native.make_clock({"a": 3}, [Dot("a", 0), Dot("a", -1), Dot("a", 3)]) == Clock({"a": 2})
    assert Clock({}).covers(Dot("a", 0)) == ref.covers(Clock({}), Dot("a", 0)) is True


def test_wrong_types_are_type_errors() -> None:
    for call in (
        lambda: native.merge(EMPTY, None),  # type: ignore[arg-type]
        lambda: native.write(EMPTY, EMPTY_CLOCK, None, b"x"),  # type: ignore[arg-type]
        lambda: native.join(EMPTY_CLOCK, {}),  # type: ignore[arg-type]
        lambda: native.canonical_state(EMPTY_CLOCK, [Dot("a", 1)]),  # type: ignore[list-item]
        lambda: native.make_clock({"a": 1}, [("a", 1)]),  # type: ignore[list-item]
        lambda: KeyState(EMPTY_CLOCK, ("not a sibling",)),  # type: ignore[arg-type]
        lambda: Dot(1, 1),  # type: ignore[arg-type]
        lambda: native.merge_all([EMPTY, "x"]),  # type: ignore[list-item]
    ):
        with pytest.raises(TypeError):
            call()


# ---- the classes, against the dataclasses they replaced ----


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class RefDot:
    actor: str
    counter: int


@dataclasses.dataclass(frozen=True, slots=True)
class RefClock:
    vector: dict[str, int]
    holes: frozenset[RefDot] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class RefSibling:
    dot: RefDot
    value: bytes | None
    timestamp_ms: int = dataclasses.field(default=0, compare=False)
    # Not compared (it belongs to the dot, as the timestamp does); printed when set.
    write_id: bytes = dataclasses.field(default=b"", compare=False, repr=False)

    def __repr__(self) -> str:
        extra = f", write_id={self.write_id!r}" if self.write_id else ""
        return (
            f"{type(self).__qualname__}(dot={self.dot!r}, value={self.value!r},"
            f" timestamp_ms={self.timestamp_ms!r}{extra})"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RefKeyState:
    clock: RefClock
    siblings: tuple[RefSibling, ...]


def ref_dot(dot: Dot) -> RefDot:
    return RefDot(dot.actor, dot.counter)


def ref_clock(clock: Clock) -> RefClock:
    return RefClock(dict(clock.vector), frozenset(ref_dot(h) for h in clock.holes))


def ref_sibling(s: Sibling) -> RefSibling:
    return RefSibling(ref_dot(s.dot), s.value, s.timestamp_ms, s.write_id)


def ref_state(state: KeyState) -> RefKeyState:
    return RefKeyState(ref_clock(state.clock), tuple(ref_sibling(s) for s in state.siblings))


def native_repr_of(reference: object) -> str:
    return repr(reference).replace("Ref", "")


@EQUIVALENCE
@given(raw_dots, raw_dots)
def test_dots_compare_hash_and_print_as_the_dataclass(a: Dot, b: Dot) -> None:
    ra, rb = ref_dot(a), ref_dot(b)
    assert (a == b, a != b, a < b, a <= b, a > b, a >= b) == (
        ra == rb,
        ra != rb,
        ra < rb,
        ra <= rb,
        ra > rb,
        ra >= rb,
    )
    assert hash(a) == hash(ra) == hash((a.actor, a.counter))
    assert repr(a) == native_repr_of(ra)
    assert sorted([a, b]) == [Dot(d.actor, d.counter) for d in sorted([ra, rb])]
    assert a != (a.actor, a.counter) and a != ra  # another class is never equal


@EQUIVALENCE
@given(any_states, any_states)
def test_states_compare_and_print_as_the_dataclasses(a: KeyState, b: KeyState) -> None:
    ra, rb = ref_state(a), ref_state(b)
    assert (a == b) == (ra == rb) and (a != b) == (ra != rb)
    assert (a.clock == b.clock) == (ra.clock == rb.clock)
    assert repr(a) == native_repr_of(ra) or len(a.clock.holes) > 1  # (set order may differ)
    assert repr(a.siblings) == native_repr_of(ra.siblings)
    for s, t in zip(a.siblings, b.siblings, strict=False):
        assert (s == t) == (ref_sibling(s) == ref_sibling(t))
        assert hash(s) == hash(ref_sibling(s)) == hash((s.dot, s.value))
    shown: dict[object, bytes] = {}  # a write id's value once, at its first sibling
    for i, s in enumerate(a.siblings):
        if s.value is not None:
            shown.setdefault(s.write_id or i, s.value)
    assert a.live_values == list(shown.values())
    assert a.found == any(s.value is not None for s in a.siblings)
    assert a.vector is a.clock.vector
    assert a.clock.entries == len(a.clock.vector) + len(a.clock.holes)
    for value in (a, a.clock):
        with pytest.raises(TypeError):
            hash(value)


def test_the_classes_are_immutable_and_closed() -> None:
    dot = Dot("a", 1)
    sibling = Sibling(dot, b"x", 5)
    clock = Clock({"a": 1})
    state = KeyState(clock, (sibling,))
    for obj, name in [
        (dot, "actor"),
        (dot, "counter"),
        (sibling, "value"),
        (sibling, "timestamp_ms"),
        (sibling, "write_id"),
        (clock, "vector"),
        (clock, "holes"),
        (state, "siblings"),
        (state, "clock"),
        (state, "other"),
    ]:
        with pytest.raises(AttributeError):
            setattr(obj, name, None)
    with pytest.raises(TypeError):
        type("Sub", (Dot,), {})


def test_constructors_take_keywords_defaults_and_other_iterables() -> None:
    dot = Dot(actor="a", counter=2)
    assert Sibling(dot=dot, value=None).timestamp_ms == 0
    assert Sibling(dot, b"x").write_id == b"" == Sibling.__new__(Sibling).write_id
    assert Sibling(dot, b"x", write_id=b"X") == Sibling(dot, b"x")  # the dot decides
    assert hash(Sibling(dot, b"x", 1, b"X")) == hash(Sibling(dot, b"x"))
    with pytest.raises(TypeError):
        Sibling(dot, b"x", 0, "X")  # type: ignore[arg-type]
    assert Sibling(dot, None).is_tombstone and not Sibling(dot, b"").is_tombstone
    assert Clock(vector={"a": 2}).holes == frozenset()
    assert Clock({"a": 3}, [Dot("a", 1)]).holes == frozenset({Dot("a", 1)})
    vector = {"a": 2}
    assert Clock(vector).vector is vector  # kept as given, like the dataclass
    assert KeyState(clock=Clock({"a": 2}), siblings=[Sibling(dot, b"x")]).siblings == (
        Sibling(dot, b"x"),
    )
    assert KeyState(EMPTY_CLOCK, ()) == EMPTY and Clock({}) == EMPTY_CLOCK
    assert not EMPTY.found and EMPTY.live_values == [] and EMPTY_CLOCK.entries == 0


def test_the_classes_pickle_and_copy() -> None:
    clock = Clock({"b": 3}, frozenset({Dot("b", 1)}))
    state, _ = native.write(EMPTY, clock, "a", b"x", 9, b"X")
    for value in (state, state.clock, state.siblings[0], state.siblings[0].dot):
        back = pickle.loads(pickle.dumps(value))
        assert back == value and type(back) is type(value)
    assert pickle.loads(pickle.dumps(state)).siblings[0].timestamp_ms == 9
    assert pickle.loads(pickle.dumps(state)).siblings[0].write_id == b"X"


def test_objects_made_by_new_alone_are_empty_not_unsafe() -> None:
    # C code reads fields without None checks: __new__ without __init__ must not leave one.
    dot, clock = Dot.__new__(Dot), Clock.__new__(Clock)
    sibling, state = Sibling.__new__(Sibling), KeyState.__new__(KeyState)
    assert (dot.actor, dot.counter) == ("", 0)
    assert clock.vector == {} and clock.holes == frozenset()
    assert sibling.dot == dot and sibling.value is None
    assert state == EMPTY and native.merge(state, EMPTY) == EMPTY
    assert not clock.covers(Dot("a", 1)) and native.join(clock, clock) == EMPTY_CLOCK
    with pytest.raises(TypeError):
        Clock({"a": 2}, [None])  # type: ignore[list-item]

"""Hypothesis laws of the version model (kvstore.core.versions).

States are never made up: they come from playing random histories of writes and merges on a
few simulated replicas of one key, so every generated state is one a cluster can reach (made-up
states could, for instance, give one dot two different values). Contexts are what a client
can hold: a read's (a state's clock) or a put's exact context.

Histories carry write ids (issue 16): every write has one, and a retry re-sends an earlier
write (same context, value and id) to a replica, which answers it as applied when it holds
a sibling of that id or made one itself that has since been replaced (the node's recent
map), and applies it under a new dot otherwise (making twins: two siblings of one write).

Laws: a clock is the set of dots it names, canonically (equal sets, equal clocks); join is
set union; merge is a semilattice join (commutative, associative, idempotent, EMPTY is its
unit); a put's context covers its write and its writer's context and no other live sibling;
writers carrying their own contexts never pile up more siblings than there are writers; and
a write disappears only when a writer that had been shown it wrote again after that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.core.versions import (
    EMPTY,
    EMPTY_CLOCK,
    Clock,
    Dot,
    KeyState,
    Sibling,
    join,
    make_clock,
    merge,
    merge_all,
    put_context,
    retry_context,
    without,
    write,
    written_as,
)

REPLICAS = 3
ACTORS = ["node-a/1", "node-b/2", "node-c/3"]  # one actor per replica, as in the node
LAWS = settings(max_examples=300, deadline=None)


def dots_of(clock: Clock) -> set[Dot]:
    """The set a clock stands for, spelt out."""
    return {
        Dot(actor, n)
        for actor, top in clock.vector.items()
        for n in range(1, top + 1)
        if Dot(actor, n) not in clock.holes
    }


def check_canonical(clock: Clock) -> None:
    assert all(c > 0 for c in clock.vector.values())
    for hole in clock.holes:
        assert 1 <= hole.counter < clock.vector[hole.actor]  # under the entry, never its top
    assert make_clock(clock.vector, clock.holes) == clock


# ---- clocks are sets of dots ----

small_vectors = st.dictionaries(st.sampled_from("abc"), st.integers(0, 6), max_size=3)
dot_lists = st.lists(st.builds(Dot, st.sampled_from("abcd"), st.integers(-1, 8)), max_size=8)


@LAWS
@given(small_vectors, dot_lists, small_vectors, dot_lists)
def test_clocks_are_canonical_sets_and_join_is_union(
    va: dict[str, int], ha: list[Dot], vb: dict[str, int], hb: list[Dot]
) -> None:
    a, b = make_clock(va, ha), make_clock(vb, hb)
    spelt = {Dot(x, n) for x, top in va.items() for n in range(1, top + 1)} - set(ha)
    assert dots_of(a) == spelt
    for c in (a, b):
        check_canonical(c)
        # (Real dots count from 1: decoding refuses anything else.)
        assert all(c.covers(d) == (d in dots_of(c)) for d in [*ha, *hb] if d.counter >= 1)
    joined = join(a, b)
    check_canonical(joined)
    assert dots_of(joined) == dots_of(a) | dots_of(b)
    assert joined == join(b, a)
    # Equal sets are equal clocks, however they were written.
    assert (dots_of(a) == dots_of(b)) == (a == b)
    taken = without(a, hb)
    check_canonical(taken)
    assert dots_of(taken) == dots_of(a) - set(hb)


# ---- reachable states ----

# ("write", replica, context source, value): the source indexes every context a client
# could hold so far (-1: no context); ("merge", from, to, None) ships one replica's state
# to another.
write_steps = st.tuples(
    st.just("write"),
    st.integers(0, REPLICAS - 1),
    st.integers(-1, 60),
    st.one_of(st.none(), st.binary(max_size=2)),  # b"" is a value, not a tombstone
)
merge_steps = st.tuples(
    st.just("merge"), st.integers(0, REPLICAS - 1), st.integers(0, REPLICAS - 1), st.none()
)
# ("retry", replica, write, None): the write-th write so far, re-sent to `replica`.
retry_steps = st.tuples(
    st.just("retry"), st.integers(0, REPLICAS - 1), st.integers(0, 30), st.none()
)
histories = st.lists(st.one_of(write_steps, merge_steps, retry_steps), max_size=30)


def retry(
    state: KeyState,
    made: dict[bytes, Dot],
    context: Clock,
    actor: str,
    value: bytes | None,
    write_id: bytes,
) -> tuple[KeyState, Dot, Clock]:
    """A coordinator's answer to a put carrying `write_id` (kvstore.node.replica): as
    applied when `state` holds a sibling of that id, or when this replica made one (`made`,
    its recent write ids) that its clock shows replaced since; applied under a new dot
    otherwise. Returns the state, the write's dot and the context answered."""
    held = written_as(state, write_id)
    if held is None and write_id in made and state.clock.covers(made[write_id]):
        held = made[write_id]
    if held is not None:
        return state, held, retry_context(state, context, write_id)
    new, dot = write(state, context, actor, value, write_id=write_id)
    made[write_id] = dot
    return new, dot, put_context(new, dot)


@dataclass
class Played:
    states: list[KeyState]  # every state any replica ever held, in order
    values: dict[Dot, bytes | None]  # what each dot was written with
    contexts: list[Clock]  # every context a client could hold: reads' and puts'


def play(history: list[tuple[str, int, int, bytes | None]]) -> Played:
    replicas = [EMPTY] * REPLICAS
    made: list[dict[bytes, Dot]] = [{} for _ in range(REPLICAS)]
    states: list[KeyState] = [EMPTY]
    values: dict[Dot, bytes | None] = {}
    contexts: list[Clock] = [EMPTY_CLOCK]
    sent: list[tuple[Clock, bytes | None, bytes]] = []  # every write: context, value, id
    for kind, x, y, value in history:
        if kind == "retry" and not sent:
            continue
        if kind in ("write", "retry"):
            if kind == "write":
                context = contexts[y % len(contexts)] if y >= 0 else EMPTY_CLOCK
                sent.append((context, value, b"w%d" % len(sent)))
            else:
                context, value, _ = sent[y % len(sent)]
            write_id = sent[-1][2] if kind == "write" else sent[y % len(sent)][2]
            replicas[x], dot, answered = retry(
                replicas[x], made[x], context, ACTORS[x], value, write_id
            )
            assert values.get(dot, value) == value  # a replica never reissues a dot
            values[dot] = value
            contexts.append(answered)
        else:
            replicas[y] = merge(replicas[y], replicas[x])
        states.extend(replicas)
        contexts.extend(r.clock for r in replicas)
    return Played(states, values, contexts)


@st.composite
def samples(draw: st.DrawFn, size: int = 3) -> tuple[list[KeyState], dict[Dot, bytes | None]]:
    """`size` reachable states of one history (repeats allowed, EMPTY among them)."""
    played = play(draw(histories))
    picks = draw(st.lists(st.integers(0, len(played.states) - 1), min_size=size, max_size=size))
    return [played.states[i] for i in picks], played.values


@st.composite
def contexts(draw: st.DrawFn) -> tuple[KeyState, Clock]:
    """A reachable state and a context a client could hold for the same key."""
    played = play(draw(histories))
    state = played.states[draw(st.integers(0, len(played.states) - 1))]
    return state, played.contexts[draw(st.integers(0, len(played.contexts) - 1))]


def check_well_formed(state: KeyState, values: dict[Dot, bytes | None]) -> None:
    dots = [s.dot for s in state.siblings]
    assert dots == sorted(dots)
    assert len(set(dots)) == len(dots)
    check_canonical(state.clock)
    for sibling in state.siblings:
        assert state.clock.covers(sibling.dot)
        assert sibling.value == values[sibling.dot]  # a dot always carries its own value


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
        assert b.clock.covers(sibling.dot) and sibling not in theirs
    for sibling in theirs - set(merged.siblings):
        assert a.clock.covers(sibling.dot) and sibling not in mine
    # A sibling both sides hold always survives; the clocks join as sets.
    assert mine & theirs <= set(merged.siblings)
    assert dots_of(merged.clock) == dots_of(a.clock) | dots_of(b.clock)


@LAWS
@given(contexts(), st.sampled_from(range(REPLICAS)), st.one_of(st.none(), st.binary(max_size=2)))
def test_a_write_learns_its_context_and_its_put_context_is_exact(
    sample: tuple[KeyState, Clock], replica: int, value: bytes | None
) -> None:
    state, context = sample
    new, dot = write(state, context, ACTORS[replica], value)
    assert merge(state, new) == new  # the old state is absorbed
    assert dots_of(new.clock) == dots_of(state.clock) | dots_of(context) | {dot}
    assert not state.clock.covers(dot) and not context.covers(dot)  # a fresh dot
    survivors = {s.dot for s in new.siblings}
    replaced = {s for s in state.siblings if context.covers(s.dot)}
    twins = {
        s for s in state.siblings if s.write_id in {r.write_id for r in replaced if r.write_id}
    }
    assert survivors == {s.dot for s in set(state.siblings) - replaced - twins} | {dot}
    # What the put returns: its own write and its context, and no other live sibling.
    exact = put_context(new, dot)
    check_canonical(exact)
    assert dots_of(exact) >= dots_of(context) | {dot}
    assert not any(exact.covers(d) for d in survivors - {dot})
    assert dots_of(exact) == dots_of(new.clock) - (survivors - {dot})


# ---- write ids: a retry is answered as applied, twins are one write ----


@LAWS
@given(samples())
def test_reads_show_each_write_once(
    sample: tuple[list[KeyState], dict[Dot, bytes | None]],
) -> None:
    (a, b, c), _ = sample
    for state in (a, b, c, merge_all([a, b, c])):
        shown: list[bytes | None] = []
        ids: set[bytes] = set()
        for sibling in state.siblings:  # sorted by dot: a write shows as its lowest twin
            if sibling.value is not None and sibling.write_id not in ids:
                ids.add(sibling.write_id)
                shown.append(sibling.value)
        assert state.live_values == shown


@LAWS
@given(contexts(), st.sampled_from(range(REPLICAS)), st.sampled_from(range(REPLICAS)))
def test_a_retry_where_the_write_is_held_changes_nothing(
    sample: tuple[KeyState, Clock], first: int, second: int
) -> None:
    state, context = sample
    made: dict[bytes, Dot] = {}
    applied, dot, answered = retry(state, made, context, ACTORS[first], b"v", b"X")
    assert answered == put_context(applied, dot)
    # The same put again, at the same replica or at one the state was shipped to.
    other = merge(state, applied) if second != first else applied
    again, dot_again, answered_again = retry(other, {}, context, ACTORS[second], b"v", b"X")
    assert again == other and dot_again == dot
    assert answered_again == answered


@LAWS
@given(contexts(), st.one_of(st.none(), st.binary(max_size=2)))
def test_twins_of_a_retry_show_once_and_are_replaced_together(
    sample: tuple[KeyState, Clock], value: bytes | None
) -> None:
    """The first try lands at A, its retry at B before A's write reached B: two dots of
    one write. Merged, a read shows the write once; a write with either try's answer
    replaces both."""
    state, context = sample
    at_a, dot_a, answered_a = retry(state, {}, context, ACTORS[0], value, b"X")
    at_b, dot_b, answered_b = retry(state, {}, context, ACTORS[1], value, b"X")
    assert dot_a != dot_b
    merged = merge(at_a, at_b)
    assert {s.dot for s in merged.siblings} >= {dot_a, dot_b}
    assert len(merged.live_values) == len(merge(state, at_a).live_values)
    for answered in (answered_a, answered_b):
        after, _ = write(merged, answered, ACTORS[2], b"next", write_id=b"Y")
        assert not {dot_a, dot_b} & {s.dot for s in after.siblings}
    # Control: without write ids the same two tries are two writes, and both stay.
    plain_a, plain_dot_a = write(state, context, ACTORS[0], value)
    plain_b, plain_dot_b = write(state, context, ACTORS[1], value)
    both = merge(plain_a, plain_b)
    after, _ = write(both, put_context(plain_b, plain_dot_b), ACTORS[2], b"next")
    assert plain_dot_a in {s.dot for s in after.siblings}


def test_collapsing_twins_in_merge_would_cost_associativity() -> None:
    """Why merge keeps twins: the rule "of two siblings of one write id, a merge keeps the
    lower dot" breaks associativity on states a cluster reaches (found by hypothesis on
    play()'s histories). Write w1 got dot a2 at node a and, retried, c1 at node c; node c
    then took w2 from a writer shown a2 only (its context covers a2, not c1)."""
    a1, a2, c1, c2 = (Dot(ACTORS[0], 1), Dot(ACTORS[0], 2), Dot(ACTORS[2], 1), Dot(ACTORS[2], 2))
    first = KeyState(Clock({ACTORS[2]: 1}), (Sibling(c1, None, 0, b"w1"),))
    second = KeyState(
        Clock({ACTORS[0]: 2}), (Sibling(a1, None, 0, b"w0"), Sibling(a2, None, 0, b"w1"))
    )
    third = KeyState(
        make_clock({ACTORS[0]: 2, ACTORS[2]: 2}, [a1]),
        (Sibling(c1, None, 0, b"w1"), Sibling(c2, None, 0, b"w2")),
    )

    def collapsing(x: KeyState, y: KeyState) -> KeyState:
        merged = merge(x, y)
        kept: list[Sibling] = []
        for sibling in merged.siblings:  # sorted by dot: the lower twin comes first
            if not any(k.write_id == sibling.write_id for k in kept):
                kept.append(sibling)
        return KeyState(merged.clock, tuple(kept))

    left = collapsing(collapsing(first, second), third)
    right = collapsing(first, collapsing(second, third))
    assert [s.write_id for s in left.siblings] == [b"w0", b"w2"]
    assert [s.write_id for s in right.siblings] == [b"w0", b"w1", b"w2"]
    assert merge(merge(first, second), third) == merge(first, merge(second, third))


# ---- writers with their own context: bounded siblings, nothing lost unseen ----


@dataclass
class Writer:
    context: Clock = EMPTY_CLOCK
    # Every dot this writer was shown: its own acknowledged writes, what reads returned.
    shown: set[Dot] = field(default_factory=set)


@dataclass
class Record:
    writer: int
    shown_before: frozenset[Dot]  # what its writer had been shown when it wrote


# R + W > N = 3: every read meets the replicas that acknowledged each completed put.
QUORUMS = [(1, 3), (2, 2), (3, 1), (2, 3), (3, 2), (3, 3)]

# ("put", writer, replicas, value) writes at replicas[0] and ships to the next W - 1;
# ("body", ...) the same with return_body: the writer is shown the replica's siblings and
# takes its whole clock; ("read", writer, replicas, None) merges the first R;
# ("merge", from, replicas, None) ships one replica's state to replicas[0] (anti-entropy,
# repair, late replication).
replica_orders = st.permutations(range(REPLICAS))
puts = st.tuples(
    st.sampled_from(["put", "body"]),
    st.integers(0, 3),
    replica_orders,
    st.one_of(st.none(), st.binary(max_size=1)),
)
reads = st.tuples(st.just("read"), st.integers(0, 3), replica_orders, st.none())
merges = st.tuples(st.just("merge"), st.integers(0, REPLICAS - 1), replica_orders, st.none())


def accounted_for(written: dict[Dot, Record], present: set[Dot]) -> set[Dot]:
    """The writes present at the end, or replaced by a writer that had been shown them
    and whose later write is accounted for in turn: judged by what writers saw only."""
    accounted = set(present)
    changed = True
    while changed:
        changed = False
        for dot in written:
            if dot not in accounted and any(
                dot in written[later].shown_before for later in accounted if later in written
            ):
                accounted.add(dot)
                changed = True
    return accounted


def run_writers(
    writers_count: int,
    quorum: tuple[int, int],
    steps: list[tuple[str, int, list[int], bytes | None]],
) -> None:
    r, w = quorum
    replicas = [EMPTY] * REPLICAS
    writers = [Writer() for _ in range(writers_count)]
    written: dict[Dot, Record] = {}
    for kind, who, order, _value in steps:
        writer = writers[who % writers_count]
        if kind in ("put", "body"):
            at = order[0]
            shown_before = frozenset(writer.shown)
            replicas[at], dot = write(replicas[at], writer.context, ACTORS[at], _value)
            written[dot] = Record(who % writers_count, shown_before)
            writer.shown.add(dot)
            if kind == "body":
                writer.context = replicas[at].clock
                writer.shown.update(s.dot for s in replicas[at].siblings)
            else:
                writer.context = put_context(replicas[at], dot)
            for other in order[1:w]:
                replicas[other] = merge(replicas[other], replicas[at])
        elif kind == "read":
            seen = merge_all(replicas[i] for i in order[:r])
            writer.context = seen.clock
            writer.shown.update(s.dot for s in seen.siblings)
        else:
            replicas[order[0]] = merge(replicas[order[0]], replicas[who])
        for state in replicas:
            assert len(state.siblings) <= writers_count, state
        # A context covers what its writer was shown, or writes already replaced somewhere
        # (by a writer that was shown them): never a live write nobody replaced.
        live = {s.dot for state in replicas for s in state.siblings}
        for each in writers:
            for dot in live - each.shown:
                if each.context.covers(dot):
                    assert any(
                        state.clock.covers(dot) and dot not in {s.dot for s in state.siblings}
                        for state in replicas
                    ), (dot, each)

    final = merge_all(replicas)
    assert len(final.siblings) <= writers_count
    present = {s.dot for s in final.siblings}
    assert accounted_for(written, present) == set(written)
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
    writes next, even at a replica that never saw it (W = 1, no reads), and never a write
    of another writer that it was not shown."""
    run_writers(writers_count, (1, 1), steps)


def test_the_issue_sequence_keeps_the_write_a_was_never_shown() -> None:
    """x0; B1 and A1 with x0's context; A2 with A1's put context, through another
    coordinator: B1 survives (run_writers fails if it were dropped unseen)."""
    steps: list[tuple[str, int, list[int], bytes | None]] = [
        ("put", 0, [0, 1, 2], b"x0"),
        ("read", 0, [0, 1, 2], None),
        ("read", 1, [0, 1, 2], None),
        ("put", 1, [0, 1, 2], b"B1"),
        ("put", 0, [0, 1, 2], b"A1"),
        ("put", 0, [1, 0, 2], b"A2"),
    ]
    run_writers(2, (2, 2), steps)


def test_the_accounting_flags_a_write_dropped_unseen() -> None:
    """Control for accounted_for: B1 dropped by a writer never shown it is not accounted."""
    b1, a1 = Dot("a", 2), Dot("a", 3)
    written = {b1: Record(1, frozenset()), a1: Record(0, frozenset())}
    assert accounted_for(written, {a1}) == {a1}
    written[a1] = Record(0, frozenset({b1}))
    assert accounted_for(written, {a1}) == {a1, b1}


def test_the_bound_needs_the_writer_to_see_its_own_write() -> None:
    """Control: reading a replica that missed one's own put (R + W <= N) does pile up
    siblings, so the quorum tests above do depend on R + W > N."""
    writer = Writer()
    replicas = [EMPTY] * REPLICAS
    replicas[0], _ = write(replicas[0], writer.context, ACTORS[0], b"1")  # W = 1
    writer.context = replicas[1].clock  # R = 1 read of a replica without it
    replicas[2], _ = write(replicas[2], writer.context, ACTORS[2], b"2")
    assert len(merge_all(replicas).siblings) == 2

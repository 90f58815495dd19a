"""The chaos checker (kvstore.chaos.checker) on hand-made histories: every rule is shown to
flag a bad history and to pass the matching good one, and the history's JSON form.

The checker judges by observation (what each process was shown of a key, and when), never by
contexts: the histories below carry context text only where a case needs to show that it is
ignored."""

from __future__ import annotations

from collections import defaultdict

import pytest

from kvstore.chaos.checker import (
    FinalStates,
    ReplicaState,
    Verdict,
    Violation,
    check,
    divergence,
    duplicate_siblings,
    lost_writes,
    observed_values,
    sibling_bound,
    stale_reads,
    writers_per_key,
)
from kvstore.chaos.history import History, Op

A, B, C = "n1:7100", "n2:7100", "n3:7100"


def write(
    process: int,
    key: str,
    value: str,
    start: float,
    end: float | None = None,
    outcome: str = "ok",
    values: tuple[str, ...] = (),
    sent: str = "",
    returned: str = "",
) -> Op:
    """A write; `values` are what it returned with return_body (() without)."""
    return Op(
        process=process,
        kind="write",
        key=key,
        node=A,
        start_s=start,
        end_s=start + 0.5 if end is None else end,
        outcome=outcome,  # type: ignore[arg-type]
        value=value,
        values=values,
        sent=sent,
        returned=returned,
    )


def read(
    process: int,
    key: str,
    values: tuple[str, ...],
    start: float,
    end: float | None = None,
    outcome: str = "ok",
    returned: str = "",
) -> Op:
    return Op(
        process=process,
        kind="read",
        key=key,
        node=A,
        start_s=start,
        end_s=start + 0.5 if end is None else end,
        outcome=outcome,  # type: ignore[arg-type]
        values=values,
        returned=returned,
    )


def state(*values: str, clock: str = "a:1") -> ReplicaState:
    return ReplicaState(values=values, clock=clock)


def same_everywhere(*values: str, clock: str = "a:1") -> dict[str, ReplicaState | None]:
    """Three primaries that agree."""
    return {node: state(*values, clock=clock) for node in (A, B, C)}


def rules(verdict: Verdict) -> list[tuple[str, str]]:
    return [(v.rule, v.key) for v in verdict.violations]


def lost(history: History, final: FinalStates) -> list[str]:
    """The values the checker reports lost, sorted."""
    return sorted(v.detail.split("'")[1] for v in lost_writes(history, final))


# --- what a process observes -------------------------------------------------------------


def test_what_each_op_shows_its_process() -> None:
    assert observed_values(read(1, "k", ("a", "b"), 0.0)) == ("a", "b")
    assert observed_values(write(1, "k", "v", 0.0)) == ("v",)
    assert observed_values(write(1, "k", "v", 0.0, values=("u", "v"))) == ("v", "u", "v")
    # Nothing is observed through an op that was not acknowledged.
    assert observed_values(read(1, "k", ("a",), 0.0, outcome="unknown")) == ()
    assert observed_values(write(1, "k", "v", 0.0, outcome="unknown")) == ()
    assert observed_values(write(1, "k", "v", 0.0, outcome="fail")) == ()


# --- lost writes: present or absent ------------------------------------------------------


def test_an_acknowledged_write_on_no_primary_is_lost() -> None:
    history = History([write(1, "k", "v1", 0.0)])
    verdict = check(history, {"k": same_everywhere("other")})
    assert rules(verdict) == [("lost-write", "k")]
    assert verdict.violations[0].detail == (
        "value 'v1' acknowledged to process 1 at 0.500 s is not on any primary and no"
        " surviving write by a process that had observed it replaced it"
    )
    assert verdict.figures["lost_writes"] == 1
    assert verdict.figures["acknowledged_writes"] == 1
    assert not verdict.valid


def test_an_acknowledged_write_present_on_one_primary_is_not_lost() -> None:
    history = History([write(1, "k", "v1", 0.0)])
    final = {"k": {A: state("v1"), B: state("v1"), C: state("v1")}}
    verdict = check(history, final)
    assert verdict.valid
    assert verdict.figures["lost_writes"] == 0
    # Present on only one primary: not lost (divergence is another rule's business).
    assert lost_writes(history, {"k": {A: state("v1"), B: state(), C: None}}) == []


def test_one_lost_write_among_several_keys_names_its_key() -> None:
    history = History([write(1, "k1", "v1", 0.0), write(2, "k2", "v2", 0.0)])
    final = {"k1": same_everywhere("v1"), "k2": same_everywhere(clock="")}
    verdict = check(history, final)
    assert rules(verdict) == [("lost-write", "k2")]
    assert verdict.figures["lost_writes"] == 1


@pytest.mark.parametrize("outcome", ["unknown", "fail"])
def test_writes_not_acknowledged_may_be_absent(outcome: str) -> None:
    history = History([write(1, "k", "v1", 0.0), write(2, "k", "v2", 1.0, outcome=outcome)])
    verdict = check(history, {"k": same_everywhere("v1")})
    assert verdict.valid
    assert verdict.figures["acknowledged_writes"] == 1
    # The same history with the write acknowledged is a violation.
    acked = History([write(1, "k", "v1", 0.0), write(2, "k", "v2", 1.0)])
    assert rules(check(acked, {"k": same_everywhere("v1")})) == [("lost-write", "k")]


def test_reads_are_not_writes_to_account_for() -> None:
    history = History([read(1, "k", ("gone",), 0.0)])
    assert lost_writes(history, {"k": same_everywhere("v")}) == []


# --- lost writes: replaced by a process that had observed them ---------------------------


def test_the_issue_loss_a_write_no_replacer_observed_is_lost() -> None:
    # p1 wrote B1; p2 wrote A1 then A2 and never read anything: A2 replaced A1 (its own
    # acknowledged write) and nothing replaced B1, yet only A2 is left. The old store's put
    # context covered every sibling at the replica, so A1 dropped B1 unseen.
    ops = [
        write(1, "k", "B1", 0.5, 1.0),
        write(2, "k", "A1", 1.1, 1.3),
        write(2, "k", "A2", 1.4, 1.6),
    ]
    verdict = check(History(ops), {"k": same_everywhere("A2", clock="a:3")})
    assert rules(verdict) == [("lost-write", "k")]
    assert "'B1' acknowledged to process 1 at 1.000 s" in verdict.violations[0].detail
    # The good history: p2 read B1 before it wrote A1.
    seen = [*ops, read(2, "k", ("B1",), 1.0, 1.05)]
    assert check(History(seen), {"k": same_everywhere("A2", clock="a:3")}).valid


def old_vector_rule(history_with_vectors: History, final: FinalStates) -> list[str]:
    """The rule kvchaos judged by before contexts were exact, as `git show
    HEAD:kvstore/chaos/checker.py` had it: a write is accounted for when present or when an
    accounted write's *sent* vector descends its *returned* one. Works on the vectors each
    op carried, here as their text (the old store's vectors had no holes). Returns the
    values it reports lost."""

    def vector(text: str) -> dict[str, int]:
        return {a: int(c) for a, c in (part.rsplit(":", 1) for part in text.split())}

    def descends(a: dict[str, int], b: dict[str, int]) -> bool:
        return all(a.get(actor, 0) >= counter for actor, counter in b.items())

    writes: dict[str, list[Op]] = defaultdict(list)
    for op in history_with_vectors:
        if op.kind == "write":
            writes[op.key].append(op)
    lost_values = []
    for key, ops in writes.items():
        present = {v for s in final.get(key, {}).values() if s is not None for v in s.values}
        accounted_sent: list[dict[str, int]] = []
        for op in sorted(ops, key=lambda o: o.start_s, reverse=True):
            returned = vector(op.returned)
            replaced = bool(returned) and any(descends(s, returned) for s in accounted_sent)
            if op.value in present or replaced:
                accounted_sent.append(vector(op.sent))
            elif op.outcome == "ok":
                lost_values.append(op.value)
    return sorted(lost_values)


@pytest.mark.parametrize("x0_by", [0, 2])
def test_the_issue_loss_passed_the_old_vector_rule(x0_by: int) -> None:
    # The vectors the old store returned for this sequence, all on one coordinator (actor
    # "a"): a put's context covered every sibling at the replica, B1 among them, so A1's
    # context "covered" B1 and the old rule took B1 as knowingly replaced.
    #
    # x0 is written by a third process that p1 and p2 read it from (x0_by=0), or by p2
    # itself (x0_by=2: p2 then never read anything); either way p2 had context a:1.
    ops = [write(x0_by, "k", "x0", 0.0, 0.2, returned="a:1")]
    ops += [read(1, "k", ("x0",), 0.3, 0.4, returned="a:1")]
    if x0_by != 2:
        ops += [read(2, "k", ("x0",), 0.3, 0.4, returned="a:1")]
    ops += [
        write(1, "k", "B1", 0.5, 1.0, sent="a:1", returned="a:2"),
        write(2, "k", "A1", 1.1, 1.3, sent="a:1", returned="a:3"),
        write(2, "k", "A2", 1.4, 1.6, sent="a:3", returned="a:4"),
    ]
    history = History(ops)
    final = {"k": same_everywhere("A2", clock="a:4")}
    assert old_vector_rule(history, final) == []
    # The new rule reads no vector: x0 was observed by p2, whose A1 and A2 replaced it;
    # B1 was observed by p1 only, which wrote nothing after.
    assert lost(history, final) == ["B1"]
    assert check(history, final).figures["lost_writes"] == 1


def test_a_write_observed_through_a_read_and_replaced_is_accounted_for() -> None:
    v1 = write(1, "k", "v1", 0.0, 0.5)
    seen = read(2, "k", ("v1",), 0.6, 0.8)
    v2 = write(2, "k", "v2", 1.0, 1.5)
    verdict = check(History([v1, seen, v2]), {"k": same_everywhere("v2")})
    assert verdict.valid
    assert verdict.figures["lost_writes"] == 0
    # p2's read showed nothing: it ended before v1 was written, so p2 never saw v1.
    early = read(2, "k", (), 0.0, 0.1)
    v1_late = write(1, "k", "v1", 0.2, 0.5)
    assert lost(History([early, v1_late, v2]), {"k": same_everywhere("v2")}) == ["v1"]


def test_a_write_replaced_by_its_own_process_next_write_is_accounted_for() -> None:
    ops = [write(1, "k", "v1", 0.0, 0.5), write(1, "k", "v2", 1.0, 1.5)]
    assert check(History(ops), {"k": same_everywhere("v2")}).valid
    # An acknowledged write is observed when acknowledged: a next write that started
    # before the first was acknowledged (only in a hand-made history) did not replace it.
    overlapping = [write(1, "k", "v1", 0.0, 1.2), write(1, "k", "v2", 1.0, 1.5)]
    assert lost(History(overlapping), {"k": same_everywhere("v2")}) == ["v1"]


def test_a_write_observed_through_a_return_body_put_is_accounted_for() -> None:
    v1 = write(1, "k", "v1", 0.0, 0.5)
    # p2's put returned the siblings after it: v1 and its own; its next write replaced both.
    shown = write(2, "k", "v2", 0.6, 1.0, values=("v1", "v2"))
    v3 = write(2, "k", "v3", 1.1, 1.5)
    verdict = check(History([v1, shown, v3]), {"k": same_everywhere("v3")})
    assert verdict.valid
    # Without return_body the put showed p2 nothing of v1.
    blind = write(2, "k", "v2", 0.6, 1.0)
    assert lost(History([v1, blind, v3]), {"k": same_everywhere("v3")}) == ["v1"]


def test_a_context_that_covers_the_write_is_not_enough() -> None:
    # p2's context "covers" v1 (a:1 is v1's own returned context) but p2 was never shown v1.
    v1 = write(1, "k", "v1", 0.0, 0.5, returned="a:1")
    v2 = write(2, "k", "v2", 1.0, 1.5, sent="a:1", returned="a:2")
    final = {"k": same_everywhere("v2", clock="a:2")}
    verdict = check(History([v1, v2]), final)
    assert rules(verdict) == [("lost-write", "k")]
    assert "'v1'" in verdict.violations[0].detail
    # Shown v1 by a read, p2 may replace it, whatever the contexts say (none here).
    seen = read(2, "k", ("v1",), 0.6, 0.8)
    bare = write(2, "k", "v2", 1.0, 1.5)
    assert check(History([v1, seen, bare]), final).valid


def test_an_observation_after_the_replacing_write_started_does_not_count() -> None:
    v1 = write(1, "k", "v1", 0.0, 0.5)
    # v2's own return_body showed p2 v1, but only when v2 ended: v2 did not replace it.
    v2 = write(2, "k", "v2", 1.0, 2.0, values=("v1", "v2"))
    assert lost(History([v1, v2]), {"k": same_everywhere("v2")}) == ["v1"]
    # p2's next write, started after that observation, does.
    v3 = write(2, "k", "v3", 2.1, 2.5)
    assert check(History([v1, v2, v3]), {"k": same_everywhere("v3")}).valid
    # A read that ended after v2 started (hand-made: one process, overlapping ops) does
    # not count either; one that ended exactly when v2 started does.
    late = read(2, "k", ("v1",), 0.6, 1.2)
    bare = write(2, "k", "v2", 1.0, 2.0)
    assert lost(History([v1, late, bare]), {"k": same_everywhere("v2")}) == ["v1"]
    exactly = read(2, "k", ("v1",), 0.6, 1.0)
    assert lost(History([v1, exactly, bare]), {"k": same_everywhere("v2")}) == []


def test_a_replacer_that_is_itself_lost_accounts_for_nothing() -> None:
    ops = [write(1, "k", "w", 0.0), read(2, "k", ("w",), 0.5, 0.7), write(2, "k", "x", 1.0)]
    verdict = check(History(ops), {"k": same_everywhere("other")})
    # x is lost, and w only counted through x: both are reported.
    assert lost(History(ops), {"k": same_everywhere("other")}) == ["w", "x"]
    assert verdict.figures["lost_writes"] == 2


def test_an_unknown_replacer_that_is_absent_does_not_account_for_the_write() -> None:
    ops = [
        write(1, "k", "w", 0.0),
        read(2, "k", ("w",), 0.5, 0.7),
        write(2, "k", "x", 1.0, outcome="unknown"),
    ]
    verdict = check(History(ops), {"k": same_everywhere("other")})
    # x is not demanded (unknown), but w is not accounted for either.
    assert rules(verdict) == [("lost-write", "k")]
    assert "'w'" in verdict.violations[0].detail


def test_a_present_unknown_replacer_accounts_for_the_write() -> None:
    ops = [
        write(1, "k", "w", 0.0),
        read(2, "k", ("w",), 0.5, 0.7),
        write(2, "k", "x", 1.0, outcome="unknown"),
    ]
    assert check(History(ops), {"k": same_everywhere("x")}).valid


def test_an_unknown_replacer_replaced_in_turn_accounts_for_the_write() -> None:
    ops = [
        write(1, "k", "w", 0.0),
        read(2, "k", ("w",), 0.5, 0.7),
        write(2, "k", "x", 1.0, outcome="unknown"),
        read(3, "k", ("x",), 1.6, 1.8),
        write(3, "k", "y", 2.0),
    ]
    assert check(History(ops), {"k": same_everywhere("y")}).valid
    # Without p3's read of x, y does not replace x, and x (unknown, absent) accounts for no one.
    unread = [*ops[:3], ops[4]]
    assert lost(History(unread), {"k": same_everywhere("y")}) == ["w"]
    assert lost(History(ops[:3]), {"k": same_everywhere("other")}) == ["w"]


def chain() -> list[Op]:
    """w by p1, read by p2, replaced by x; x read by p3, replaced by y."""
    return [
        write(1, "k", "w", 0.0, 0.5),
        read(2, "k", ("w",), 0.6, 0.8),
        write(2, "k", "x", 1.0, 1.5),
        read(3, "k", ("x",), 1.6, 1.8),
        write(3, "k", "y", 2.0, 2.5),
    ]


def test_a_chain_of_replacements_ending_in_a_present_value_accounts_for_all() -> None:
    ops = chain()
    # Given in any order: the checker orders by start time.
    verdict = check(History(list(reversed(ops))), {"k": same_everywhere("y")})
    assert verdict.valid
    # Break the chain's end: all three are lost.
    broken = check(History(ops), {"k": same_everywhere("z")})
    assert [v.rule for v in broken.violations] == ["lost-write"] * 3


def test_a_chain_whose_last_link_is_missing_loses_every_write_in_it() -> None:
    # y replaced x, but its value is missing and z's writer never observed y.
    ops = [*chain(), write(4, "k", "z", 3.0, 3.5)]
    assert lost(History(ops), {"k": same_everywhere("z")}) == ["w", "x", "y"]


def test_a_chain_broken_in_the_middle_loses_the_writes_before_the_break() -> None:
    # p3 never observed x: y does not replace x. y is replaced by z (p4 read y).
    ops = [
        write(1, "k", "w", 0.0, 0.5),
        read(2, "k", ("w",), 0.6, 0.8),
        write(2, "k", "x", 1.0, 1.5),
        write(3, "k", "y", 2.0, 2.5),
        read(4, "k", ("y",), 2.6, 2.8),
        write(4, "k", "z", 3.0, 3.5),
    ]
    assert lost(History(ops), {"k": same_everywhere("z")}) == ["w", "x"]
    # Mend it: p3 read x before writing y.
    mended = [*ops, read(3, "k", ("x",), 1.6, 1.8)]
    assert lost(History(mended), {"k": same_everywhere("z")}) == []


@pytest.mark.parametrize(
    "shown",
    [
        [],  # p2 saw nothing
        [read(2, "k", (), 0.6, 0.8)],  # a read that showed nothing
        [read(2, "k", ("other",), 0.6, 0.8)],  # a read that showed something else
        [read(2, "k", ("w",), 0.6, 0.8, outcome="unknown")],  # not acknowledged
        [read(2, "j", ("w",), 0.6, 0.8)],  # a read of another key
        [write(2, "j", "u", 0.6, 0.8, values=("w", "u"))],  # a return-body put of another key
        [read(3, "k", ("w",), 0.6, 0.8)],  # another process saw it
    ],
)
def test_a_replacer_never_shown_the_write_does_not_account_for_it(shown: list[Op]) -> None:
    ops = [write(1, "k", "w", 0.0, 0.5), *shown, write(2, "k", "x", 1.0, 1.5)]
    final = {"k": same_everywhere("x"), "j": same_everywhere("u")}
    assert [(v.rule, v.key) for v in lost_writes(History(ops), final)] == [("lost-write", "k")]
    assert lost(History(ops), final) == ["w"]


def test_a_replacer_that_started_earlier_does_not_account_for_the_write() -> None:
    # p2 observed w, but only after x (which started before w) was under way.
    x = write(2, "k", "x", 0.0, 0.5)
    w = write(1, "k", "w", 1.0, 1.5)
    seen = read(2, "k", ("w", "x"), 2.0, 2.5)
    assert rules(check(History([x, w, seen]), {"k": same_everywhere("x")})) == [("lost-write", "k")]


def test_a_replacer_on_another_key_does_not_account_for_the_write() -> None:
    ops = [write(1, "k", "w", 0.0), read(2, "k", ("w",), 0.5, 0.7), write(2, "j", "x", 1.0)]
    final = {"k": same_everywhere("other"), "j": same_everywhere("x")}
    assert rules(check(History(ops), final)) == [("lost-write", "k")]


def test_a_write_never_replaces_itself_even_at_equal_times() -> None:
    # Zero-length (hand-made): its own process observed it at its very start.
    w = write(1, "k", "w", 1.0, 1.0)
    assert lost(History([w]), {"k": same_everywhere("other")}) == ["w"]
    # Two writes that observed each other at equal times: a cycle ending in no present value.
    a = write(1, "k", "a", 1.0, 1.0)
    b = write(2, "k", "b", 1.0, 1.0)
    both = [a, b, read(1, "k", ("b",), 0.9, 1.0), read(2, "k", ("a",), 0.9, 1.0)]
    assert lost(History(both), {"k": same_everywhere("other")}) == ["a", "b"]


@pytest.mark.parametrize("order", [0, 1])
def test_equal_start_times_are_judged_in_any_order(order: int) -> None:
    # a and b start together; p2 observed a by then, and b is present: a is accounted for
    # whichever of the two the checker judges first.
    a = write(1, "k", "a", 1.0, 1.0)
    b = write(2, "k", "b", 1.0, 1.5)
    seen = read(2, "k", ("a",), 0.9, 1.0)
    ops = [a, b, seen] if order == 0 else [b, a, seen]
    assert lost(History(ops), {"k": same_everywhere("b")}) == []
    assert lost(History([a, b]), {"k": same_everywhere("b")}) == ["a"]


def test_many_processes_on_one_key_are_judged_quickly() -> None:
    # Ten processes, each reading then writing one key 2,000 times: every write is replaced
    # by its process's next one, and the last ones are present.
    ops = []
    t = 0.0
    for step in range(2_000):
        for p in range(10):
            ops.append(read(p, "k", (f"p{(p + 1) % 10}-{step - 1}",), t, t + 0.001))
            ops.append(write(p, "k", f"p{p}-{step}", t + 0.002, t + 0.003))
            t += 0.004
    final = {"k": same_everywhere(*(f"p{p}-1999" for p in range(10)))}
    verdict = check(History(ops), final)
    assert verdict.figures["lost_writes"] == 0
    assert verdict.figures["reads_after_own_write"] == 19_990


# --- convergence -------------------------------------------------------------------------


def test_primaries_with_different_values_diverge() -> None:
    final = {"k": {A: state("v1"), B: state("v2"), C: state("v1")}}
    assert [(v.rule, v.key) for v in divergence(final)] == [("diverged", "k")]
    history = History([write(1, "k", "v1", 0.0), write(2, "k", "v2", 0.0, outcome="unknown")])
    verdict = check(history, final)
    assert rules(verdict) == [("diverged", "k")]
    assert verdict.figures["keys_diverged"] == 1


def test_primaries_with_different_clocks_diverge() -> None:
    final = {"k": {A: state("v", clock="a:1"), B: state("v", clock="a:2 -a:1")}}
    violations = divergence(final)
    assert [(v.rule, v.key) for v in violations] == [("diverged", "k")]
    assert "clock [a:2 -a:1]" in violations[0].detail


def test_a_diverged_key_is_reported_once() -> None:
    final = {"k": {A: state("v1"), B: state("v2"), C: state("v3")}}
    assert len(divergence(final)) == 1


def test_an_unreadable_primary_is_reported() -> None:
    final = {"k": {A: state("v"), B: None, C: state("v")}}
    violations = divergence(final)
    assert [(v.rule, v.key) for v in violations] == [("unreadable", "k")]
    assert B in violations[0].detail
    assert check(History(), final).figures["keys_diverged"] == 1


def test_identical_primaries_in_any_value_order_converged() -> None:
    final: dict[str, dict[str, ReplicaState | None]] = {
        "k": {A: state("v1", "v2", clock="a:1 b:1"), B: state("v2", "v1", clock="a:1 b:1")},
        "j": same_everywhere(clock=""),  # deleted everywhere: nothing live, still converged
    }
    assert divergence(final) == []
    history = History(
        [
            write(1, "k", "v1", 0.0),
            write(2, "k", "v2", 0.0),
            write(1, "j", "gone", 0.0, outcome="unknown"),
        ]
    )
    verdict = check(history, final)
    assert verdict.valid
    assert verdict.figures["keys_diverged"] == 0
    assert verdict.figures["keys_checked"] == 2


# --- sibling bound -----------------------------------------------------------------------


def two_writers(outcome_of_last: str = "ok") -> list[Op]:
    return [
        write(1, "k", "v1", 0.0),
        write(2, "k", "v2", 0.0),
        write(1, "k", "v3", 1.0, outcome=outcome_of_last),
    ]


def test_a_read_with_more_siblings_than_writers_is_flagged() -> None:
    ops = [*two_writers(), read(3, "k", ("v1", "v2", "v3"), 2.0)]
    final = {"k": same_everywhere("v1", "v2", "v3")}
    assert writers_per_key(History(ops)) == {"k": 2}
    violations, most = sibling_bound(History(ops), {})
    assert [(v.rule, v.key) for v in violations] == [("too-many-siblings", "k")]
    assert "a read by process 3" in violations[0].detail
    assert most == 3
    verdict = check(History(ops), final)
    assert ("too-many-siblings", "k") in rules(verdict)
    assert not verdict.valid


def test_an_unknown_write_raises_the_sibling_bound() -> None:
    ops = [*two_writers("unknown"), read(3, "k", ("v1", "v2", "v3"), 2.0)]
    assert writers_per_key(History(ops)) == {"k": 3}
    assert sibling_bound(History(ops), {}) == ([], 3)


def test_a_read_within_the_bound_is_fine() -> None:
    ops = [*two_writers(), read(3, "k", ("v2", "v3"), 2.0)]
    assert sibling_bound(History(ops), {}) == ([], 2)


def test_the_bound_of_a_view_counts_the_writes_started_before_it_ended() -> None:
    # When the read ended only p1 had started writing: two values are one too many.
    ops = [
        write(1, "k", "v1", 0.0),
        read(3, "k", ("v1", "v2"), 0.1, 0.4),
        write(2, "k", "v2", 0.4),
    ]
    assert [v.rule for v in sibling_bound(History(ops), {})[0]] == ["too-many-siblings"]
    assert writers_per_key(History(ops), 0.4) == {"k": 1}
    later = [*ops[:1], read(3, "k", ("v1", "v2"), 0.1, 0.5), ops[2]]
    assert sibling_bound(History(later), {})[0] == []


def test_only_acknowledged_reads_are_judged_for_siblings() -> None:
    ops = [*two_writers(), read(3, "k", ("v1", "v2", "v3"), 2.0, outcome="unknown")]
    assert sibling_bound(History(ops), {})[0] == []


def test_a_return_body_put_with_more_siblings_than_writers_is_flagged() -> None:
    # What a return_body put returned is a view of the key like a read: bounded alike.
    ops = [*two_writers(), write(2, "k", "v4", 2.0, values=("v1", "v2", "v3", "v4"))]
    violations, most = sibling_bound(History(ops), {})
    assert [(v.rule, v.key) for v in violations] == [("too-many-siblings", "k")]
    assert "a return-body put by process 2 at 2.500 s" in violations[0].detail
    assert most == 4
    # Within the bound (its own value counts: the put started before it ended).
    fine = [*two_writers(), write(2, "k", "v4", 2.0, values=("v3", "v4"))]
    assert sibling_bound(History(fine), {}) == ([], 2)
    # A put not acknowledged is no view (and returns nothing); one without return_body
    # returns no values and shows nothing.
    unknown = [
        *two_writers(),
        write(2, "k", "v4", 2.0, outcome="unknown", values=("v1", "v2", "v3")),
    ]
    assert sibling_bound(History(unknown), {})[0] == []
    assert sibling_bound(History(two_writers()), {}) == ([], 0)


def test_a_final_replica_with_too_many_siblings_is_flagged() -> None:
    history = History(two_writers())
    final = {"k": {A: state("v2", "v3"), B: state("v1", "v2", "v3")}}
    violations, most = sibling_bound(history, final)
    assert [(v.rule, v.key) for v in violations] == [("too-many-siblings", "k")]
    assert B in violations[0].detail
    assert most == 3


def test_siblings_of_a_key_never_written_exceed_the_bound() -> None:
    history = History([read(1, "k", ("ghost",), 0.0)])
    assert writers_per_key(history) == {}
    assert [v.rule for v in sibling_bound(history, {})[0]] == ["too-many-siblings"]
    assert sibling_bound(History([read(1, "k", (), 0.0)]), {})[0] == []


def test_one_value_twice_is_a_duplicate_not_a_second_writer() -> None:
    ops = [
        write(1, "k", "v", 0.0),
        read(1, "k", ("v", "v"), 1.0),
        read(2, "k", ("v",), 1.0),
    ]
    final: FinalStates = {
        "k": {A: state("v", "v"), B: state("v", "v")},
        "j": same_everywhere("w"),
    }
    history = History([*ops, write(2, "j", "w", 0.0)])
    verdict = check(history, final)
    assert verdict.valid
    assert verdict.figures["reads_with_duplicate_sibling"] == 1
    assert verdict.figures["puts_with_duplicate_sibling"] == 0
    assert verdict.figures["keys_with_duplicate_sibling"] == 1
    assert verdict.figures["most_siblings"] == 2
    # Without duplicates the figures are zero.
    clean = check(History(ops[:1]), {"k": same_everywhere("v")})
    assert clean.figures["reads_with_duplicate_sibling"] == 0
    assert clean.figures["keys_with_duplicate_sibling"] == 0


def test_a_return_body_put_showing_one_value_twice_is_a_duplicate() -> None:
    ops = [write(1, "k", "v", 0.0), write(1, "k", "u", 1.0, values=("u", "u"))]
    figures = duplicate_siblings(History(ops), {})
    assert figures == {
        "reads_with_duplicate_sibling": 0,
        "puts_with_duplicate_sibling": 1,
        "keys_with_duplicate_sibling": 0,
    }
    assert sibling_bound(History(ops), {}) == ([], 2)


def test_a_failed_write_does_not_raise_the_sibling_bound() -> None:
    ops = [*two_writers("fail"), read(3, "k", ("v1", "v2", "v3"), 2.0)]
    assert writers_per_key(History(ops)) == {"k": 2}
    assert [v.rule for v in sibling_bound(History(ops), {})[0]] == ["too-many-siblings"]


# --- stale reads -------------------------------------------------------------------------


def test_a_read_missing_its_own_acknowledged_write_is_stale() -> None:
    ops = [write(1, "k", "mine", 0.0, 1.0), read(1, "k", ("old",), 2.0)]
    verdict = check(History(ops), {"k": same_everywhere("mine")})
    assert verdict.figures["reads_after_own_write"] == 1
    assert verdict.figures["stale_reads"] == 1
    assert verdict.figures["stale_read_rate"] == 1.0
    assert verdict.valid  # a figure, never a violation


def test_a_read_that_sees_its_write_or_a_replacer_is_not_stale() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0),
        read(1, "k", ("mine",), 1.0, 1.5),
        read(2, "k", ("mine",), 1.0, 1.5),  # p2 was shown mine...
        write(2, "k", "later", 2.0, 2.5),  # ...so its write replaced it
        read(1, "k", ("later",), 3.0, 3.5),  # not stale
        read(3, "k", ("later",), 3.0, 3.5),  # p3 was shown the replacer...
        write(3, "k", "latest", 4.0, 4.5),  # ...so this replaced mine too, transitively
        read(1, "k", ("latest",), 5.0, 5.5),  # not stale
        write(4, "k", "blind", 5.0, 5.5),  # p4 was shown nothing
        read(1, "k", ("blind",), 6.0, 6.5),  # stale
    ]
    figures = stale_reads(History(ops))
    assert figures == {"reads_after_own_write": 4, "stale_reads": 1, "stale_read_rate": 0.25}


def test_a_read_showing_a_write_whose_context_covers_mine_is_still_stale() -> None:
    # p2's context "covers" mine, but p2 was never shown mine: contexts prove nothing.
    ops = [
        write(1, "k", "mine", 0.0, 1.0, returned="a:1"),
        write(2, "k", "other", 1.5, 2.0, sent="a:1", returned="a:2"),
        read(1, "k", ("other",), 3.0, returned="a:2"),
    ]
    assert stale_reads(History(ops))["stale_reads"] == 1
    shown = [*ops, read(2, "k", ("mine",), 1.0, 1.2)]
    assert stale_reads(History(shown))["stale_reads"] == 0


def test_a_replacer_that_observed_mine_too_late_does_not_save_a_read() -> None:
    # p2 was shown mine only by its own return_body put: that put did not replace mine.
    ops = [
        write(1, "k", "mine", 0.0, 1.0),
        write(2, "k", "other", 0.5, 1.5, values=("mine", "other")),
        read(1, "k", ("other",), 2.0, 2.5),
    ]
    assert stale_reads(History(ops))["stale_reads"] == 1


def test_an_unknown_write_of_the_process_after_its_own_replaces_it() -> None:
    # The process observed its acknowledged write; its next write (outcome unknown) replaced
    # it, and a read showing that write's value is not stale.
    ops = [
        write(1, "k", "mine", 0.0, 1.0),
        write(1, "k", "maybe", 1.0, 2.0, outcome="unknown"),
        read(1, "k", ("maybe",), 3.0),
    ]
    assert stale_reads(History(ops)) == {
        "reads_after_own_write": 1,
        "stale_reads": 0,
        "stale_read_rate": 0.0,
    }


def test_only_reads_after_the_process_own_write_are_counted() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0),
        read(2, "k", ("old",), 2.0),  # another process
        read(1, "k", ("old",), 0.5, 2.0),  # began before the write ended
        read(1, "j", ("old",), 2.0),  # another key
        read(1, "k", ("old",), 2.0, outcome="unknown"),  # not acknowledged
    ]
    figures = stale_reads(History(ops))
    assert figures == {"reads_after_own_write": 0, "stale_reads": 0, "stale_read_rate": 0.0}


def test_only_acknowledged_writes_make_a_read_stale() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0),
        write(1, "k", "lost?", 1.0, 2.0, outcome="unknown"),
        read(1, "k", ("mine",), 3.0),
    ]
    figures = stale_reads(History(ops))
    assert figures == {"reads_after_own_write": 1, "stale_reads": 0, "stale_read_rate": 0.0}


def test_the_last_acknowledged_write_is_the_one_a_read_must_see() -> None:
    ops = [
        write(1, "k", "first", 0.0, 1.0),
        write(1, "k", "second", 1.0, 2.0),
        read(1, "k", ("first",), 3.0),
    ]
    assert stale_reads(History(ops))["stale_reads"] == 1


# --- unchecked keys ----------------------------------------------------------------------


def test_a_written_key_missing_from_the_final_read_is_unchecked() -> None:
    history = History([write(1, "k", "v", 0.0), write(1, "j", "w", 0.0, outcome="unknown")])
    verdict = check(history, {"k": same_everywhere("v")})
    assert rules(verdict) == [("unchecked", "j")]
    assert not verdict.valid
    assert check(history, {"k": same_everywhere("v"), "j": same_everywhere()}).valid


def test_an_acknowledged_write_on_a_missing_key_is_also_reported_lost() -> None:
    # What the code does today: a key the final read did not cover has no values, so its
    # acknowledged writes are also counted as lost (see the report: arguably only unchecked).
    history = History([write(1, "j", "w", 0.0)])
    verdict = check(history, {})
    assert rules(verdict) == [("lost-write", "j"), ("unchecked", "j")]
    assert verdict.figures["lost_writes"] == 1


def test_a_key_only_read_need_not_be_in_the_final_states() -> None:
    assert check(History([read(1, "k", (), 0.0)]), {}).valid


# --- history and verdict JSON ------------------------------------------------------------


def test_history_json_round_trip_keeps_every_op() -> None:
    ops = [
        write(1, "k", "v1", 0.0, 0.25, sent="a/1:1", returned="a/1:2 b/1:1 -a/1:1"),
        write(1, "k", "v3", 0.3, 0.4, values=("v1", "v3"), sent="a/1:2", returned="a/1:3"),
        read(2, "k", ("v1", "v2"), 0.5, 0.75, returned="a/1:2"),
        Op(3, "write", "j", B, 1.0, 2.0, "fail", value="x", error="bad argument"),
    ]
    history = History(ops)
    data = history.to_json()
    assert data[1]["values"] == ["v1", "v3"]
    assert data[2]["values"] == ["v1", "v2"]
    assert data[0]["returned"] == "a/1:2 b/1:1 -a/1:1"
    back = History.from_json(data)
    assert back.ops == ops
    assert all(isinstance(op.values, tuple) for op in back.ops)


def test_history_json_of_the_vector_era_still_loads() -> None:
    # Histories written when contexts were kept as vectors: shown as text now.
    old = {
        "process": 1,
        "kind": "write",
        "key": "k",
        "node": A,
        "start_s": 0.0,
        "end_s": 0.5,
        "outcome": "ok",
        "value": "v",
        "values": [],
        "sent": {"b": 2, "a": 1},
        "returned": {},
        "error": "",
    }
    op = History.from_json([old]).ops[0]
    assert (op.sent, op.returned, op.values) == ("a:1 b:2", "", ())


def test_history_summary_counts_kinds_and_outcomes() -> None:
    history = History(
        [
            write(1, "k", "v1", 0.0, 1.0),
            write(1, "k", "v2", 1.0, 2.0, outcome="unknown"),
            write(2, "j", "v3", 0.0, 0.5, outcome="fail"),
            read(2, "k", ("v1",), 1.0, 3.25),
            read(3, "z", (), 1.0, 1.5, outcome="unknown"),
        ]
    )
    assert history.summary() == {
        "ops": 5,
        "write_ok": 1,
        "write_fail": 1,
        "write_unknown": 1,
        "read_ok": 1,
        "read_fail": 0,
        "read_unknown": 1,
        "keys": 3,
        "processes": 3,
        "duration_s": 3.25,
    }
    assert History().summary()["duration_s"] == 0.0
    assert len(history) == 5


def test_history_records_from_many_threads() -> None:
    import threading

    history = History()

    def run(process: int) -> None:
        for i in range(100):
            history.record(write(process, "k", f"{process}-{i}", history.now()))

    threads = [threading.Thread(target=run, args=(p,)) for p in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history) == 400
    assert len({op.value for op in history}) == 400


def test_verdict_json_caps_violations_and_counts_every_rule() -> None:
    violations = [Violation("lost-write", f"k{i}", "gone") for i in range(5)]
    violations += [Violation("diverged", "d", "apart"), Violation("unchecked", "u", "missed")]
    verdict = Verdict(violations=violations, figures={"lost_writes": 5})
    data = verdict.to_json(max_violations=3)
    assert data["valid"] is False
    assert data["violation_counts"] == {"lost-write": 5, "diverged": 1, "unchecked": 1}
    assert data["violations"] == [
        {"rule": "lost-write", "key": f"k{i}", "detail": "gone"} for i in range(3)
    ]
    assert data["figures"] == {"lost_writes": 5}
    assert Verdict().to_json() == {
        "valid": True,
        "violation_counts": {},
        "violations": [],
        "figures": {},
    }

"""The chaos checker (kvstore.chaos.checker) on hand-made histories: every rule is shown to
flag a bad history and to pass the matching good one, and the history's JSON form."""

from __future__ import annotations

import pytest

from kvstore.chaos.checker import (
    ReplicaState,
    Verdict,
    Violation,
    check,
    divergence,
    lost_writes,
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
    sent: dict[str, int] | None = None,
    returned: dict[str, int] | None = None,
) -> Op:
    return Op(
        process=process,
        kind="write",
        key=key,
        node=A,
        start_s=start,
        end_s=start + 0.5 if end is None else end,
        outcome=outcome,  # type: ignore[arg-type]
        value=value,
        sent=sent or {},
        returned=returned or {},
    )


def read(
    process: int,
    key: str,
    values: tuple[str, ...],
    start: float,
    end: float | None = None,
    outcome: str = "ok",
    returned: dict[str, int] | None = None,
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
        returned=returned or {},
    )


def state(*values: str, vector: dict[str, int] | None = None) -> ReplicaState:
    return ReplicaState(values=values, vector=vector if vector is not None else {"a": 1})


def same_everywhere(*values: str, vector: dict[str, int] | None = None) -> dict:
    """Three primaries that agree."""
    return {node: state(*values, vector=vector) for node in (A, B, C)}


def rules(verdict: Verdict) -> list[tuple[str, str]]:
    return [(v.rule, v.key) for v in verdict.violations]


# --- lost writes -------------------------------------------------------------------------


def test_an_acknowledged_write_on_no_primary_is_lost() -> None:
    history = History([write(1, "k", "v1", 0.0, returned={"a": 1})])
    verdict = check(history, {"k": same_everywhere("other")})
    assert rules(verdict) == [("lost-write", "k")]
    assert "'v1'" in verdict.violations[0].detail
    assert verdict.figures["lost_writes"] == 1
    assert verdict.figures["acknowledged_writes"] == 1
    assert not verdict.valid


def test_an_acknowledged_write_present_on_one_primary_is_not_lost() -> None:
    history = History([write(1, "k", "v1", 0.0, returned={"a": 1})])
    final = {"k": {A: state("v1"), B: state("v1"), C: state("v1")}}
    verdict = check(history, final)
    assert verdict.valid
    assert verdict.figures["lost_writes"] == 0
    # Present on only one primary: not lost (divergence is another rule's business).
    assert lost_writes(history, {"k": {A: state("v1"), B: state(), C: None}}) == []


def test_one_lost_write_among_several_keys_names_its_key() -> None:
    history = History(
        [
            write(1, "k1", "v1", 0.0, returned={"a": 1}),
            write(2, "k2", "v2", 0.0, returned={"b": 1}),
        ]
    )
    final = {"k1": same_everywhere("v1"), "k2": same_everywhere(vector={})}
    verdict = check(history, final)
    assert rules(verdict) == [("lost-write", "k2")]
    assert verdict.figures["lost_writes"] == 1


def test_a_write_replaced_knowingly_is_accounted_for() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, sent={"a": 1}, returned={"a": 2})
    verdict = check(History([w, x]), {"k": same_everywhere("x", vector={"a": 2})})
    assert verdict.valid
    assert verdict.figures["lost_writes"] == 0


def test_a_replacer_that_is_itself_lost_accounts_for_nothing() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, sent={"a": 1}, returned={"a": 2})
    verdict = check(History([w, x]), {"k": same_everywhere("other")})
    # x is lost, and w only counted through x: both are reported.
    lost = [v for v in verdict.violations if v.rule == "lost-write"]
    assert len(lost) == 2
    assert {("'w'" in v.detail, "'x'" in v.detail) for v in lost} == {(True, False), (False, True)}
    assert verdict.figures["lost_writes"] == 2


def test_an_unknown_replacer_that_is_absent_does_not_account_for_the_write() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, outcome="unknown", sent={"a": 1})
    verdict = check(History([w, x]), {"k": same_everywhere("other")})
    # x is not demanded (unknown), but w is not accounted for either.
    assert rules(verdict) == [("lost-write", "k")]
    assert "'w'" in verdict.violations[0].detail


def test_a_present_unknown_replacer_accounts_for_the_write() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, outcome="unknown", sent={"a": 1})
    assert check(History([w, x]), {"k": same_everywhere("x")}).valid


def test_a_chain_of_replacements_ending_in_a_present_value_accounts_for_all() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, sent={"a": 1}, returned={"a": 2})
    y = write(3, "k", "y", 2.0, sent={"a": 2}, returned={"a": 3})
    # Given in any order: the checker orders by start time.
    verdict = check(History([y, w, x]), {"k": same_everywhere("y", vector={"a": 3})})
    assert verdict.valid
    # Break the chain's end: all three are lost.
    broken = check(History([w, x, y]), {"k": same_everywhere("z")})
    assert [v.rule for v in broken.violations] == ["lost-write"] * 3


def test_a_chain_whose_last_link_is_missing_loses_every_write_in_it() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, sent={"a": 1}, returned={"a": 2})
    # y replaced x (sent covers x) but its value is missing and nothing replaced y.
    y = write(3, "k", "y", 2.0, sent={"a": 2}, returned={"a": 3})
    z = write(4, "k", "z", 3.0, sent={"b": 9}, returned={"a": 3, "b": 10})
    verdict = check(History([w, x, y, z]), {"k": same_everywhere("z")})
    lost = sorted(v.detail.split("'")[1] for v in verdict.violations if v.rule == "lost-write")
    assert lost == ["w", "x", "y"]


@pytest.mark.parametrize("sent", [{"a": 0}, {"b": 3}, {}])
def test_a_replacer_whose_context_does_not_cover_the_write_does_not_account_for_it(
    sent: dict[str, int],
) -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "k", "x", 1.0, sent=sent, returned={"a": 1, "b": 4})
    verdict = check(History([w, x]), {"k": same_everywhere("x")})
    assert rules(verdict) == [("lost-write", "k")]
    assert "'w'" in verdict.violations[0].detail


def test_a_context_covering_only_part_of_the_write_does_not_account_for_it() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1, "b": 2})
    x = write(2, "k", "x", 1.0, sent={"a": 5, "b": 1}, returned={"a": 6, "b": 2})
    assert rules(check(History([w, x]), {"k": same_everywhere("x")})) == [("lost-write", "k")]


def test_a_replacer_that_started_earlier_does_not_account_for_the_write() -> None:
    # The context covers w, but a write that started before w cannot have seen it.
    x = write(2, "k", "x", 0.0, sent={"a": 1}, returned={"a": 2})
    w = write(1, "k", "w", 1.0, returned={"a": 1})
    assert rules(check(History([x, w]), {"k": same_everywhere("x")})) == [("lost-write", "k")]


def test_a_replacer_on_another_key_does_not_account_for_the_write() -> None:
    w = write(1, "k", "w", 0.0, returned={"a": 1})
    x = write(2, "j", "x", 1.0, sent={"a": 1}, returned={"a": 2})
    final = {"k": same_everywhere("other"), "j": same_everywhere("x", vector={"a": 2})}
    assert rules(check(History([w, x]), final)) == [("lost-write", "k")]


def test_a_write_without_a_returned_context_cannot_be_shown_replaced() -> None:
    # Every context covers an empty one: the checker must not take that as a replacement.
    w = write(1, "k", "w", 0.0, returned={})
    x = write(2, "k", "x", 1.0, sent={"a": 1}, returned={"a": 2})
    verdict = check(History([w, x]), {"k": same_everywhere("x")})
    assert rules(verdict) == [("lost-write", "k")]
    assert "'w'" in verdict.violations[0].detail


@pytest.mark.parametrize("outcome", ["unknown", "fail"])
def test_writes_not_acknowledged_may_be_absent(outcome: str) -> None:
    history = History(
        [
            write(1, "k", "v1", 0.0, returned={"a": 1}),
            write(2, "k", "v2", 1.0, outcome=outcome),
        ]
    )
    verdict = check(history, {"k": same_everywhere("v1")})
    assert verdict.valid
    assert verdict.figures["acknowledged_writes"] == 1
    # The same history with the write acknowledged is a violation.
    acked = History(
        [
            write(1, "k", "v1", 0.0, returned={"a": 1}),
            write(2, "k", "v2", 1.0, returned={"b": 1}),
        ]
    )
    assert rules(check(acked, {"k": same_everywhere("v1")})) == [("lost-write", "k")]


def test_reads_are_not_writes_to_account_for() -> None:
    history = History([read(1, "k", ("gone",), 0.0)])
    assert lost_writes(history, {"k": same_everywhere("v")}) == []


# --- convergence -------------------------------------------------------------------------


def test_primaries_with_different_values_diverge() -> None:
    final = {"k": {A: state("v1"), B: state("v2"), C: state("v1")}}
    assert [(v.rule, v.key) for v in divergence(final)] == [("diverged", "k")]
    history = History([write(1, "k", "v1", 0.0, returned={"a": 1}), write(2, "k", "v2", 0.0)])
    verdict = check(history, final)
    assert rules(verdict) == [("diverged", "k")]
    assert verdict.figures["keys_diverged"] == 1


def test_primaries_with_different_vectors_diverge() -> None:
    final = {"k": {A: state("v", vector={"a": 1}), B: state("v", vector={"a": 2})}}
    assert [(v.rule, v.key) for v in divergence(final)] == [("diverged", "k")]


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
    final = {
        "k": {
            A: state("v1", "v2", vector={"a": 1, "b": 1}),
            B: state("v2", "v1", vector={"b": 1, "a": 1}),
        },
        "j": same_everywhere(vector={}),  # deleted everywhere: nothing live, still converged
    }
    assert divergence(final) == []
    history = History(
        [
            write(1, "k", "v1", 0.0, returned={"a": 1}),
            write(2, "k", "v2", 0.0, returned={"b": 1}),
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
        write(1, "k", "v1", 0.0, returned={"a": 1}),
        write(2, "k", "v2", 0.0, returned={"b": 1}),
        write(1, "k", "v3", 1.0, outcome=outcome_of_last, returned={"a": 2}),
    ]


def test_a_read_with_more_siblings_than_writers_is_flagged() -> None:
    ops = [*two_writers(), read(3, "k", ("v1", "v2", "v3"), 2.0)]
    final = {"k": same_everywhere("v1", "v2", "v3")}
    assert writers_per_key(History(ops)) == {"k": 2}
    violations, most = sibling_bound(History(ops), {})
    assert [(v.rule, v.key) for v in violations] == [("too-many-siblings", "k")]
    assert "process 3" in violations[0].detail
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


def test_only_acknowledged_reads_are_judged_for_siblings() -> None:
    ops = [*two_writers(), read(3, "k", ("v1", "v2", "v3"), 2.0, outcome="unknown")]
    assert sibling_bound(History(ops), {})[0] == []


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
        write(1, "k", "v", 0.0, returned={"a": 1}),
        read(1, "k", ("v", "v"), 1.0, returned={"a": 1}),
        read(2, "k", ("v",), 1.0, returned={"a": 1}),
    ]
    final = {"k": {A: state("v", "v"), B: state("v", "v")}, "j": same_everywhere("w")}
    history = History([*ops, write(2, "j", "w", 0.0, returned={"b": 1})])
    verdict = check(history, final)
    assert verdict.valid
    assert verdict.figures["reads_with_duplicate_sibling"] == 1
    assert verdict.figures["keys_with_duplicate_sibling"] == 1
    assert verdict.figures["most_siblings"] == 2
    # Without duplicates both figures are zero.
    clean = check(History(ops[:1]), {"k": same_everywhere("v")})
    assert clean.figures["reads_with_duplicate_sibling"] == 0
    assert clean.figures["keys_with_duplicate_sibling"] == 0


def test_a_failed_write_does_not_raise_the_sibling_bound() -> None:
    ops = [*two_writers("fail"), read(3, "k", ("v1", "v2", "v3"), 2.0)]
    assert writers_per_key(History(ops)) == {"k": 2}


# --- stale reads -------------------------------------------------------------------------


def test_a_read_missing_its_own_acknowledged_write_is_stale() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0, returned={"a": 2}),
        read(1, "k", ("old",), 2.0, returned={"a": 1}),
    ]
    verdict = check(History(ops), {"k": same_everywhere("mine", vector={"a": 2})})
    assert verdict.figures["reads_after_own_write"] == 1
    assert verdict.figures["stale_reads"] == 1
    assert verdict.figures["stale_read_rate"] == 1.0
    assert verdict.valid  # a figure, never a violation


def test_a_read_that_sees_its_write_or_a_descendant_is_not_stale() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0, returned={"a": 2}),
        read(1, "k", ("mine",), 2.0, returned={"a": 2}),
        read(1, "k", ("later",), 3.0, returned={"a": 3}),  # replaced by a descendant
        read(1, "k", ("old",), 4.0, returned={"a": 1}),  # stale
    ]
    figures = stale_reads(History(ops))
    assert figures == {"reads_after_own_write": 3, "stale_reads": 1, "stale_read_rate": 0.333333}


def test_only_reads_after_the_process_own_write_are_counted() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0, returned={"a": 2}),
        read(2, "k", ("old",), 2.0, returned={"a": 1}),  # another process
        read(1, "k", ("old",), 0.5, 2.0, returned={"a": 1}),  # began before the write ended
        read(1, "j", ("old",), 2.0, returned={"a": 1}),  # another key
        read(1, "k", ("old",), 2.0, outcome="unknown"),  # not acknowledged
    ]
    figures = stale_reads(History(ops))
    assert figures == {"reads_after_own_write": 0, "stale_reads": 0, "stale_read_rate": 0.0}


def test_only_acknowledged_writes_make_a_read_stale() -> None:
    ops = [
        write(1, "k", "mine", 0.0, 1.0, returned={"a": 2}),
        write(1, "k", "lost?", 1.0, 2.0, outcome="unknown"),
        read(1, "k", ("mine",), 3.0, returned={"a": 2}),
    ]
    figures = stale_reads(History(ops))
    assert figures == {"reads_after_own_write": 1, "stale_reads": 0, "stale_read_rate": 0.0}


def test_the_last_acknowledged_write_is_the_one_a_read_must_see() -> None:
    ops = [
        write(1, "k", "first", 0.0, 1.0, returned={"a": 1}),
        write(1, "k", "second", 1.0, 2.0, sent={"a": 1}, returned={"a": 2}),
        read(1, "k", ("first",), 3.0, returned={"a": 1}),
    ]
    assert stale_reads(History(ops))["stale_reads"] == 1


# --- unchecked keys ----------------------------------------------------------------------


def test_a_written_key_missing_from_the_final_read_is_unchecked() -> None:
    history = History(
        [
            write(1, "k", "v", 0.0, returned={"a": 1}),
            write(1, "j", "w", 0.0, outcome="unknown"),
        ]
    )
    verdict = check(history, {"k": same_everywhere("v")})
    assert rules(verdict) == [("unchecked", "j")]
    assert not verdict.valid
    assert check(history, {"k": same_everywhere("v"), "j": same_everywhere()}).valid


def test_an_acknowledged_write_on_a_missing_key_is_also_reported_lost() -> None:
    # What the code does today: a key the final read did not cover has no values, so its
    # acknowledged writes are also counted as lost (see the report: arguably only unchecked).
    history = History([write(1, "j", "w", 0.0, returned={"a": 1})])
    verdict = check(history, {})
    assert rules(verdict) == [("lost-write", "j"), ("unchecked", "j")]
    assert verdict.figures["lost_writes"] == 1


def test_a_key_only_read_need_not_be_in_the_final_states() -> None:
    assert check(History([read(1, "k", (), 0.0)]), {}).valid


# --- history and verdict JSON ------------------------------------------------------------


def test_history_json_round_trip_keeps_every_op() -> None:
    ops = [
        write(1, "k", "v1", 0.0, 0.25, sent={"a": 1}, returned={"a": 2, "b": 1}),
        read(2, "k", ("v1", "v2"), 0.5, 0.75, returned={"a": 2}),
        Op(3, "write", "j", B, 1.0, 2.0, "fail", value="x", error="bad argument"),
    ]
    history = History(ops)
    data = history.to_json()
    assert data[1]["values"] == ["v1", "v2"]
    back = History.from_json(data)
    assert back.ops == ops
    assert isinstance(back.ops[1].values, tuple)


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

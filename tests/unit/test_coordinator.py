"""The sans-IO quorum coordinators (kvstore.core.coordinator): events in, outcomes out."""

from __future__ import annotations

import random

import pytest

from kvstore import _native
from kvstore.core.coordinator import (
    GetCoordinator,
    MergeReplica,
    Outcome,
    PutCoordinator,
    ReadReplica,
)
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, merge, merge_all, write
from kvstore.errors import InvalidOption, Unavailable

TARGETS = ["n1", "n2", "n3"]


def states() -> tuple[KeyState, KeyState, KeyState]:
    old, _ = write(EMPTY, EMPTY_CLOCK, "n1/a", b"old")
    new, _ = write(old, old.clock, "n1/a", b"new")
    other, _ = write(old, EMPTY_CLOCK, "n2/b", b"concurrent")
    return old, new, other


def test_outcome_values_are_the_native_states() -> None:
    assert Outcome.PENDING.value == _native.PENDING_STATE
    assert Outcome.SUCCEEDED.value == _native.SUCCEEDED_STATE
    assert Outcome.FAILED.value == _native.FAILED_STATE


# ---- get ----


def test_get_start_reads_every_target() -> None:
    get = GetCoordinator(TARGETS, 2)
    assert get.start() == [ReadReplica("n1"), ReadReplica("n2"), ReadReplica("n3")]
    assert get.outcome is Outcome.PENDING
    assert (get.answered, get.required) == (0, 2)


def test_get_succeeds_at_r_replies() -> None:
    old, new, _ = states()
    get = GetCoordinator(TARGETS, 2)
    assert get.on_reply("n2", old) is Outcome.PENDING
    assert get.on_reply("n3", new) is Outcome.SUCCEEDED
    assert get.outcome is Outcome.SUCCEEDED
    assert get.answered == 2
    assert get.result() == new  # new descends from old
    assert get.stale_targets(get.result()) == ["n2"]


def test_get_with_r_1_succeeds_on_the_first_reply() -> None:
    get = GetCoordinator(TARGETS, 1)
    assert get.on_reply("n3", None) is Outcome.SUCCEEDED
    assert get.result() == EMPTY


def test_get_with_r_equal_to_targets_needs_them_all() -> None:
    get = GetCoordinator(TARGETS, 3)
    assert get.on_reply("n1", None) is Outcome.PENDING
    assert get.on_reply("n2", None) is Outcome.PENDING
    assert get.on_reply("n3", None) is Outcome.SUCCEEDED


def test_get_fails_as_soon_as_the_quorum_is_unreachable() -> None:
    get = GetCoordinator(TARGETS, 2)
    assert get.on_failure("n1", "connection refused") is Outcome.PENDING
    assert get.on_failure("n3", "deadline exceeded") is Outcome.FAILED
    assert get.outcome is Outcome.FAILED
    # A late reply does not turn a failure into a success.
    assert get.on_reply("n2", EMPTY) is Outcome.FAILED


def test_get_repeated_answers_count_once() -> None:
    old, new, _ = states()
    get = GetCoordinator(TARGETS, 2)
    assert get.on_reply("n1", old) is Outcome.PENDING
    assert get.on_reply("n1", new) is Outcome.PENDING  # a duplicate does not count
    assert get.answered == 1
    assert get.replies == {"n1": old}  # and does not replace the first reply
    assert get.on_failure("n1", "late failure") is Outcome.PENDING
    assert get.failures == {}  # an answered target cannot fail afterwards
    assert get.on_failure("n2", "refused") is Outcome.PENDING
    assert get.on_failure("n2", "refused again") is Outcome.PENDING
    assert get.failures == {"n2": "refused"}
    assert get.on_reply("n2", new) is Outcome.PENDING  # nor a failed one answer
    assert "n2" not in get.replies
    assert get.on_reply("n3", new) is Outcome.SUCCEEDED


def test_get_unavailable_carries_counts_and_reasons() -> None:
    get = GetCoordinator(["a:1", "b:1", "c:1", "d:1", "e:1"], 3)
    get.on_reply("a:1", None)
    get.on_failure("c:1", "connection refused")
    get.on_failure("b:1", "deadline exceeded")
    assert get.outcome is Outcome.PENDING
    assert get.on_failure("e:1", "node stopping") is Outcome.FAILED
    error = get.unavailable()
    assert isinstance(error, Unavailable)
    assert (error.answered, error.required) == (1, 3)
    text = str(error)
    assert "1 of 3" in text
    assert "5 contacted, 3 failed, 1 pending" in text
    assert "b:1: deadline exceeded" in text
    assert "c:1: connection refused" in text
    assert "e:1: node stopping" in text
    assert text.index("b:1") < text.index("c:1") < text.index("e:1")  # sorted


def test_unavailable_on_timeout_explains_why() -> None:
    get = GetCoordinator(TARGETS, 2)
    get.on_reply("n1", None)
    error = get.unavailable("deadline of 500 ms passed")
    assert (error.answered, error.required) == (1, 2)
    assert "deadline of 500 ms passed" in str(error)
    assert "2 pending" in str(error)
    assert "failures" not in str(error)


def test_get_result_merges_replies() -> None:
    old, new, other = states()
    get = GetCoordinator(TARGETS, 3)
    get.on_reply("n1", new)
    get.on_reply("n2", other)
    get.on_reply("n3", None)
    merged = get.result()
    assert merged == merge(new, other)
    assert sorted(merged.live_values) == [b"concurrent", b"new"]
    assert get.stale_targets(merged) == ["n1", "n2", "n3"]
    assert get.stale_targets(merge_all([merged, old])) == ["n1", "n2", "n3"]


def test_get_stale_targets_lists_only_replicas_behind_the_merge() -> None:
    old, new, _ = states()
    get = GetCoordinator(["a", "b", "c", "d"], 4)
    for target, state in zip("abcd", [new, old, new, None], strict=True):
        get.on_reply(target, state)
    merged = get.result()
    assert merged == new
    assert get.stale_targets(merged) == ["b", "d"]
    assert GetCoordinator(TARGETS, 1).result() == EMPTY  # no replies: nothing merged


def test_coordinator_input_checks() -> None:
    with pytest.raises(Unavailable) as info:
        GetCoordinator([], 2)
    assert (info.value.answered, info.value.required) == (0, 2)
    with pytest.raises(InvalidOption):
        GetCoordinator(TARGETS, 4)
    with pytest.raises(ValueError):
        GetCoordinator(["n1", "n1", "n2"], 2)
    with pytest.raises(ValueError):
        PutCoordinator("n9", TARGETS, 2)
    with pytest.raises(InvalidOption):
        PutCoordinator("n1", TARGETS, 4)
    with pytest.raises(ValueError):
        GetCoordinator(TARGETS, 0)


def test_unknown_targets_are_refused() -> None:
    get = GetCoordinator(TARGETS, 2)
    with pytest.raises(KeyError):
        get.on_reply("stranger", None)
    with pytest.raises(KeyError):
        get.on_failure("stranger", "x")
    assert get.answered == 0 and get.replies == {} and get.failures == {}


def test_get_against_a_model_on_random_event_orders() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        count = rng.randint(1, 7)
        targets = [f"n{i}" for i in range(count)]
        r = rng.randint(1, count)
        get = GetCoordinator(targets, r)
        oks: set[str] = set()
        fails: set[str] = set()
        for _ in range(rng.randint(0, 3 * count)):
            target = rng.choice(targets)
            if rng.random() < 0.5:
                outcome = get.on_reply(target, None)
                if target not in fails:
                    oks.add(target)
            else:
                outcome = get.on_failure(target, "x")
                if target not in oks:
                    fails.add(target)
            if len(oks) >= r:
                expected = Outcome.SUCCEEDED
            elif count - len(fails) < r:
                expected = Outcome.FAILED
            else:
                expected = Outcome.PENDING
            assert outcome is expected is get.outcome
            assert get.answered == len(oks)
            assert set(get.replies) == oks
            assert set(get.failures) == fails


# ---- put ----


def test_put_start_counts_the_local_write_and_ships_to_the_others() -> None:
    _, new, _ = states()
    put = PutCoordinator("n2", TARGETS, 2)
    assert put.outcome is Outcome.PENDING
    actions = put.start(new)
    assert actions == [MergeReplica("n1", new), MergeReplica("n3", new)]
    assert all(a.state is new for a in actions)
    assert put.answered == 1
    assert put.outcome is Outcome.PENDING
    assert put.on_ack("n2") is Outcome.PENDING  # the local write counted already
    assert put.on_ack("n3") is Outcome.SUCCEEDED
    assert put.on_ack("n1") is Outcome.SUCCEEDED
    assert put.answered == 3


def test_put_with_w_1_succeeds_on_start() -> None:
    _, new, _ = states()
    put = PutCoordinator("n1", TARGETS, 1)
    assert len(put.start(new)) == 2
    assert put.outcome is Outcome.SUCCEEDED


def test_put_alone_on_one_target() -> None:
    _, new, _ = states()
    put = PutCoordinator("n1", ["n1"], 1)
    assert put.start(new) == []
    assert put.outcome is Outcome.SUCCEEDED


def test_put_fails_when_too_many_replicas_fail() -> None:
    _, new, _ = states()
    put = PutCoordinator("n1", TARGETS, 3)
    put.start(new)
    assert put.on_failure("n3", "connection refused") is Outcome.FAILED
    assert put.on_ack("n2") is Outcome.FAILED
    error = put.unavailable()
    assert (error.answered, error.required) == (2, 3)
    assert "put: 2 of 3" in str(error)
    assert "n3: connection refused" in str(error)


def test_put_repeated_acks_and_failures_count_once() -> None:
    _, new, _ = states()
    put = PutCoordinator("n1", ["n1", "n2", "n3", "n4"], 3)
    put.start(new)
    assert put.on_ack("n2") is Outcome.PENDING
    assert put.on_ack("n2") is Outcome.PENDING
    assert put.on_failure("n2", "late") is Outcome.PENDING
    assert put.answered == 2 and put.failures == {}
    assert put.on_failure("n3", "down") is Outcome.PENDING
    assert put.on_failure("n3", "down") is Outcome.PENDING
    assert put.on_ack("n4") is Outcome.SUCCEEDED


# ---- sloppy quorum ----

PRIMARIES = ["p1", "p2", "p3"]
FALLBACKS = ["f1", "f2"]


def test_put_replaces_a_primary_held_down_by_a_fallback_with_a_hint() -> None:
    _, new, _ = states()
    put = PutCoordinator("p1", PRIMARIES, 2, FALLBACKS, down={"p3"})
    actions = put.start(new)
    assert actions == [MergeReplica("p2", new), MergeReplica("f1", new, hint_for="p3")]
    assert put.failures == {"p3": "down (failure detector)"}
    assert put.on_ack("f1") is Outcome.SUCCEEDED  # a stand-in's ack counts
    assert not put.settled  # p2 has not answered yet
    put.on_ack("p2")
    assert put.settled


def test_put_failure_brings_in_the_next_fallback_for_the_same_primary() -> None:
    _, new, _ = states()
    put = PutCoordinator("p1", PRIMARIES, 3, FALLBACKS)
    put.start(new)
    assert put.on_failure("p2", "refused") is Outcome.PENDING
    assert put.take_actions() == [MergeReplica("f1", new, hint_for="p2")]
    assert put.on_failure("f1", "refused") is Outcome.PENDING
    assert put.take_actions() == [MergeReplica("f2", new, hint_for="p2")]  # still for p2
    assert put.on_ack("p3") is Outcome.PENDING
    assert put.on_ack("f2") is Outcome.SUCCEEDED
    assert put.settled


def test_put_runs_out_of_fallbacks_and_fails() -> None:
    _, new, _ = states()
    put = PutCoordinator("p1", PRIMARIES, 3, ["f1"], down={"f1"})
    put.start(new)
    assert put.on_failure("p2", "refused") is Outcome.FAILED
    assert put.take_actions() == []
    assert "f1" in put.failures  # skipped: held down
    assert "3 contacted" in str(put.unavailable())


def test_strict_put_has_no_fallbacks_and_fails_on_a_down_primary() -> None:
    _, new, _ = states()
    put = PutCoordinator("p1", PRIMARIES, 3, down={"p2"})
    assert put.start(new) == [MergeReplica("p3", new)]
    assert put.outcome is Outcome.FAILED


def test_slow_primary_gets_a_stand_in_once_and_either_ack_counts() -> None:
    _, new, _ = states()
    put = PutCoordinator("p1", PRIMARIES, 2, FALLBACKS)
    put.start(new)
    put.on_ack("p2")
    assert put.outcome is Outcome.SUCCEEDED and not put.settled  # p3 silent
    put.on_slow("p3")
    put.on_slow("p3")  # once only
    put.on_slow("p2")  # answered: no stand-in
    put.on_slow("p1")  # the local write: answered
    assert put.take_actions() == [MergeReplica("f1", new, hint_for="p3")]
    put.on_ack("f1")
    assert put.settled  # p3's place is taken by f1
    assert put.on_ack("p3") is Outcome.SUCCEEDED  # a late answer is harmless


def test_get_stand_in_answers_count_but_are_not_repaired() -> None:
    old, new, _ = states()
    get = GetCoordinator(PRIMARIES, 2, FALLBACKS, down={"p1"})
    assert get.start() == [ReadReplica("p2"), ReadReplica("p3"), ReadReplica("f1")]
    get.on_reply("f1", new)
    assert get.on_reply("p2", old) is Outcome.SUCCEEDED
    assert get.result() == new
    assert get.stale_targets(get.result()) == ["p2"]  # f1 is a stand-in: never repaired
    assert not get.settled
    get.on_failure("p3", "refused")
    assert get.take_actions() == [ReadReplica("f2")]
    get.on_reply("f2", None)
    assert get.settled


def test_fallbacks_must_be_distinct_from_primaries() -> None:
    with pytest.raises(ValueError):
        GetCoordinator(PRIMARIES, 2, ["p1"])


def test_a_slow_primary_and_its_stand_in_count_once_towards_w() -> None:
    _, new, _ = states()
    put = PutCoordinator("p1", PRIMARIES, 3, FALLBACKS)
    put.start(new)
    put.on_slow("p2")
    assert put.take_actions() == [MergeReplica("f1", new, hint_for="p2")]
    assert put.on_ack("f1") is Outcome.PENDING
    # p2 answers late: the same slot, so still 2 of 3 (p3 holds nothing yet).
    assert put.on_ack("p2") is Outcome.PENDING
    assert put.answered == 2
    assert put.on_ack("p3") is Outcome.SUCCEEDED

"""The sans-IO get/put coordinators: quorum decisions and the actions they ask for."""

from __future__ import annotations

import pytest

from kvstore.core import versions
from kvstore.core.coordinator import (
    GetCoordinator,
    MergeReplica,
    Outcome,
    PutCoordinator,
    ReadReplica,
)
from kvstore.core.versions import EMPTY
from kvstore.errors import InvalidOption, Unavailable

TARGETS = ["a", "b", "c"]


def state(actor: str, value: bytes, base=EMPTY, context=None):  # type: ignore[no-untyped-def]
    return versions.write(base, context or {}, actor, value)[0]


def test_get_succeeds_at_r_and_merges_the_replies() -> None:
    fsm = GetCoordinator(TARGETS, 2)
    assert fsm.start() == [ReadReplica(t) for t in TARGETS]
    old = state("a", b"old")
    new = state("a", b"new", base=old, context=old.vector)
    assert fsm.on_reply("a", old) is Outcome.PENDING
    assert fsm.on_reply("a", new) is Outcome.PENDING  # a second answer from a counts once
    assert fsm.on_reply("b", new) is Outcome.SUCCEEDED
    merged = fsm.result()
    assert merged.live_values == [b"new"]
    assert fsm.stale_targets(merged) == ["a"]  # a's first answer is the one kept


def test_get_not_found_replies_count_toward_the_quorum() -> None:
    fsm = GetCoordinator(TARGETS, 2)
    fsm.on_reply("a", None)
    assert fsm.on_reply("c", None) is Outcome.SUCCEEDED
    assert fsm.result() == EMPTY and not fsm.result().found


def test_get_fails_as_soon_as_the_quorum_is_out_of_reach() -> None:
    fsm = GetCoordinator(TARGETS, 2)
    assert fsm.on_failure("a", "UNAVAILABLE") is Outcome.PENDING
    assert fsm.on_failure("b", "DEADLINE_EXCEEDED") is Outcome.FAILED
    error = fsm.unavailable()
    assert isinstance(error, Unavailable)
    assert (error.answered, error.required) == (0, 2)
    assert "a: UNAVAILABLE" in str(error) and "b: DEADLINE_EXCEEDED" in str(error)
    assert "0 of 2" in str(error)


def test_put_counts_the_local_write_and_ships_the_state_to_the_others() -> None:
    fsm = PutCoordinator("b", TARGETS, 2)
    applied = state("b", b"v")
    assert fsm.start(applied) == [MergeReplica("a", applied), MergeReplica("c", applied)]
    assert fsm.answered == 1 and fsm.outcome is Outcome.PENDING
    assert fsm.on_failure("a", "UNAVAILABLE") is Outcome.PENDING
    assert fsm.on_ack("c") is Outcome.SUCCEEDED


def test_put_with_w_equal_n_fails_on_one_failure() -> None:
    fsm = PutCoordinator("a", TARGETS, 3)
    fsm.start(state("a", b"v"))
    fsm.on_ack("b")
    assert fsm.on_failure("c", "UNAVAILABLE") is Outcome.FAILED
    assert fsm.unavailable("deadline").answered == 2


def test_bad_coordinator_arguments() -> None:
    with pytest.raises(InvalidOption):
        GetCoordinator(TARGETS, 4)
    with pytest.raises(Unavailable):
        GetCoordinator([], 1)
    with pytest.raises(ValueError):
        PutCoordinator("z", TARGETS, 2)
    with pytest.raises(ValueError):
        GetCoordinator(["a", "a"], 1)

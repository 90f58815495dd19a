"""States another node sends obey the limits a client's write does (Limits.check_state), and a
page of records a peer sends is taken only whole and only for the keys asked for."""

from __future__ import annotations

import pytest

from kvstore.core.limits import REPLICATED_SIBLINGS_FACTOR, Limits
from kvstore.core.transport import PeerFailure
from kvstore.core.versions import EMPTY, KeyState, write
from kvstore.errors import InvalidKey, TooManySiblings, ValueTooLarge
from kvstore.storage.paging import check_page_records

LIMITS = Limits(max_value_bytes=100, max_siblings=4)


def siblings(count: int, value: bytes = b"v") -> KeyState:
    """`count` concurrent writes, each by its own actor with no context."""
    state = EMPTY
    for i in range(count):
        state, _ = write(state, EMPTY.clock, f"actor{i}", value, 0)
    return state


def test_a_state_within_the_limits_is_taken() -> None:
    LIMITS.check_state(b"k", siblings(REPLICATED_SIBLINGS_FACTOR * LIMITS.max_siblings))


def test_more_siblings_than_any_replica_makes_are_refused() -> None:
    with pytest.raises(TooManySiblings):
        LIMITS.check_state(b"k", siblings(REPLICATED_SIBLINGS_FACTOR * LIMITS.max_siblings + 1))


def test_a_value_past_max_value_bytes_is_refused_in_a_merge_too() -> None:
    with pytest.raises(ValueTooLarge):
        LIMITS.check_state(b"k", siblings(1, b"x" * 101))


def test_a_key_past_max_key_bytes_is_refused() -> None:
    with pytest.raises(InvalidKey):
        Limits(max_key_bytes=4).check_state(b"12345", siblings(1))


def test_a_page_with_a_key_not_asked_for_is_refused_whole() -> None:
    page = [(b"mine", siblings(1)), (b"elsewhere", siblings(1))]
    with pytest.raises(PeerFailure, match="outside the range"):
        check_page_records("peer", page, LIMITS, lambda key: key == b"mine")


def test_an_oversized_record_is_left_out_alone() -> None:
    """One record past the limits (forged, or written before they were lowered) must not
    block a transfer: the rest of its page is taken."""
    good = (b"a", siblings(1))
    page = [good, (b"b", siblings(1, b"x" * 101))]
    assert check_page_records("peer", page, LIMITS, lambda key: True) == [good]


def test_a_good_page_passes() -> None:
    page = [(b"a", siblings(2))]
    assert check_page_records("peer", page, LIMITS, lambda key: True) == page

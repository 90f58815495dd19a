"""Versioned encodings (kvstore.storage.codec): stored records and client causal contexts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._native import hash_key
from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.versions import EMPTY, Dot, KeyState, Sibling, canonical_state, merge, write
from kvstore.errors import InvalidArgument, InvalidContext, StorageError
from kvstore.storage.codec import (
    CONTEXT_FORMAT,
    MAX_CONTEXT_ENTRIES,
    RECORD_FORMAT,
    decode_context,
    decode_record,
    encode_context,
    encode_record,
    state_from_proto,
    state_to_proto,
)

KEY = b"user:42"
# A vector entry whose actor is not UTF-8 (protobuf strings must be).
BAD_UTF8_ENTRY = b"\x12\x05\x0a\x01\xff\x10\x01"


def sample_state() -> KeyState:
    s, _ = write(EMPTY, {}, "n1/aa", b"first", 1_700_000_000_000)
    s, _ = write(s, {}, "n2/bb", None, 1_700_000_000_001)  # a concurrent delete
    s, _ = write(s, {"n3/cc": 5}, "n1/aa", b"", 17)  # an empty value, and a foreign entry
    s, _ = write(s, {}, "n\u00e9/\u2603", b"\x00\xff" * 100, 0)  # non-ASCII actor
    return s


def timestamps(state: KeyState) -> list[int]:
    return [s.timestamp_ms for s in state.siblings]


# ---- records ----


def test_record_round_trip_keeps_everything() -> None:
    state = sample_state()
    assert len(state.siblings) == 4
    data = encode_record(state)
    back = decode_record(data)
    assert back == state
    assert timestamps(back) == timestamps(state)  # not part of equality, still kept
    assert [s.is_tombstone for s in back.siblings] == [s.is_tombstone for s in state.siblings]
    assert b"" in back.live_values  # an empty value is not a tombstone
    assert encode_record(back) == data  # deterministic


def test_proto_round_trip() -> None:
    state = sample_state()
    record = state_to_proto(state)
    assert record.format == RECORD_FORMAT == 1
    assert [e.actor for e in record.vector] == sorted(state.vector)
    assert state_from_proto(record) == state
    tombstones = [s for s in record.siblings if s.tombstone]
    assert len(tombstones) == 1 and tombstones[0].value == b""


def test_empty_state_round_trips() -> None:
    assert decode_record(encode_record(EMPTY)) == EMPTY


def test_record_encoding_is_canonical_whatever_the_insertion_order() -> None:
    a, _ = write(EMPTY, {}, "a", b"x")
    b, _ = write(EMPTY, {}, "b", b"y")
    ab, ba = merge(a, b), merge(b, a)
    assert encode_record(ab) == encode_record(ba)
    shuffled = KeyState(vector={"b": 1, "a": 1}, siblings=ab.siblings)
    assert encode_record(shuffled) == encode_record(ab)


def record(**fields: object) -> bytes:
    return pb.KeyRecord(**fields).SerializeToString()  # type: ignore[arg-type]


def entry(actor: str, counter: int) -> pb.VectorEntry:
    return pb.VectorEntry(actor=actor, counter=counter)


def sibling(actor: str, counter: int, value: bytes = b"v") -> pb.Sibling:
    return pb.Sibling(dot_actor=actor, dot_counter=counter, value=value)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # not protobuf
        b"garbage!",
        b"\x0a\x05ab",  # truncated length-delimited field
        record(format=0),  # no format
        record(format=2),  # a future format
        record(format=1, vector=[entry("", 1)]),  # empty actor
        record(format=1, vector=[entry("a", 1), entry("a", 2)]),  # repeated actor
        record(format=1, vector=[entry("a", 1)], siblings=[sibling("a", 2)]),  # not covered
        record(format=1, vector=[entry("a", 1)], siblings=[sibling("", 1)]),  # empty dot actor
        record(format=1, vector=[entry("a", 1)], siblings=[sibling("a", 0)]),  # zero counter
        record(format=1, vector=[entry("a", 2)], siblings=[sibling("a", 1), sibling("a", 1)]),
        record(format=1) + BAD_UTF8_ENTRY,
    ],
)
def test_decode_record_refuses_unreadable_records(data: bytes) -> None:
    with pytest.raises(StorageError):
        decode_record(data)


def test_state_from_proto_raises_value_error() -> None:
    with pytest.raises(ValueError):
        state_from_proto(pb.KeyRecord(format=7))


def test_record_with_zero_vector_entry_reads_as_canonical() -> None:
    data = record(format=1, vector=[entry("a", 1), entry("z", 0)], siblings=[sibling("a", 1)])
    assert decode_record(data) == canonical_state({"a": 1}, [Sibling(Dot("a", 1), b"v")])


# ---- contexts ----


def test_context_round_trip() -> None:
    vector = {"n1/aa": 3, "n2/bb": 1, "n\u00e9/\u2603": 2**40}
    data = encode_context(vector, KEY)
    assert isinstance(data, bytes) and data
    assert decode_context(data, KEY) == vector
    assert encode_context(dict(reversed(list(vector.items()))), KEY) == data  # canonical


def test_context_carries_the_key_position() -> None:
    message = pb.CausalContext.FromString(encode_context({"a": 1}, KEY))
    assert message.format == CONTEXT_FORMAT == 1
    assert message.key_position == hash_key(KEY)


def test_empty_context() -> None:
    assert encode_context({}, KEY) == b""
    assert decode_context(b"", KEY) == {}


def test_context_of_another_key_is_refused() -> None:
    data = encode_context({"a": 1}, b"key-1")
    with pytest.raises(InvalidContext, match="another key"):
        decode_context(data, b"key-2")


def context(**fields: object) -> bytes:
    fields.setdefault("key_position", hash_key(KEY))
    return pb.CausalContext(**fields).SerializeToString()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",
        b"garbage!",
        b"\x0a\x05ab",
        b"\x00",
        context(format=0, vector=[entry("a", 1)]),
        context(format=2, vector=[entry("a", 1)]),
        context(format=1, vector=[entry("a", 1)], key_position=hash_key(KEY) ^ 1),
        context(format=1, vector=[entry("a", 1), entry("a", 2)]),  # repeated
        context(format=1, vector=[entry("", 1)]),  # empty actor
        context(format=1, vector=[entry("a", 0)]),  # zero counter
        context(format=1, vector=[entry("a", 1), entry("b", 0)]),
        context(format=1) + BAD_UTF8_ENTRY,
    ],
)
def test_decode_context_refuses_what_kvstore_did_not_make(data: bytes) -> None:
    with pytest.raises(InvalidContext) as info:
        decode_context(data, KEY)
    assert isinstance(info.value, InvalidArgument)


def test_decode_context_refuses_too_many_entries() -> None:
    entries = [entry(f"a{i}", 1) for i in range(MAX_CONTEXT_ENTRIES + 1)]
    with pytest.raises(InvalidContext):
        decode_context(context(format=1, vector=entries), KEY)
    assert len(decode_context(context(format=1, vector=entries[:-1]), KEY)) == 4096


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_decode_context_of_random_bytes_raises_invalid_context(data: bytes) -> None:
    # Random bytes can only pass with format 1 and this key's exact 64-bit position.
    with pytest.raises(InvalidContext):
        decode_context(data, KEY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_record_of_random_bytes_is_a_state_or_a_storage_error(data: bytes) -> None:
    try:
        state = decode_record(data)
    except StorageError:
        return
    # Whatever is accepted is a well-formed state that re-encodes to an equal state.
    assert decode_record(encode_record(state)) == state
    assert all(state.vector.get(s.dot.actor, 0) >= s.dot.counter for s in state.siblings)


actors = st.text(min_size=1, max_size=8)
vectors = st.dictionaries(actors, st.integers(1, 2**64 - 1), max_size=6)


@settings(max_examples=300, deadline=None)
@given(vectors, st.binary(min_size=1, max_size=40))
def test_context_round_trip_property(vector: dict[str, int], key: bytes) -> None:
    assert decode_context(encode_context(vector, key), key) == vector


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "\u00e9"]),
            st.one_of(st.none(), st.binary(max_size=8)),
            st.integers(0, 2**62),
        ),
        max_size=8,
    )
)
def test_record_round_trip_property(writes: list[tuple[str, bytes | None, int]]) -> None:
    state = EMPTY
    for actor, value, ts in writes:
        state, _ = write(state, {}, actor, value, ts)
    back = decode_record(encode_record(state))
    assert back == state
    assert timestamps(back) == timestamps(state)

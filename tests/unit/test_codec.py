"""Versioned encodings (kvstore.storage.codec): stored records and client causal contexts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore._native import hash_key
from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.versions import (
    EMPTY,
    EMPTY_CLOCK,
    Clock,
    Dot,
    KeyState,
    Sibling,
    canonical_state,
    make_clock,
    merge,
    put_context,
    write,
)
from kvstore.errors import InvalidArgument, InvalidContext, StorageError
from kvstore.storage.codec import (
    CONTEXT_FORMAT,
    CONTEXT_FORMAT_HOLES,
    MAX_ACTOR_BYTES,
    MAX_CONTEXT_COUNTER,
    MAX_CONTEXT_ENTRIES,
    MAX_RECORD_COUNTER,
    RECORD_FORMAT,
    RECORD_FORMAT_HOLES,
    decode_context,
    decode_record,
    describe_clock,
    encode_context,
    encode_record,
    state_from_proto,
    state_to_proto,
)

KEY = b"user:42"
# A vector entry whose actor is not UTF-8 (protobuf strings must be).
BAD_UTF8_ENTRY = b"\x12\x05\x0a\x01\xff\x10\x01"


def sample_state() -> KeyState:
    s, _ = write(EMPTY, EMPTY_CLOCK, "n1/aa", b"first", 1_700_000_000_000)
    s, _ = write(s, EMPTY_CLOCK, "n2/bb", None, 1_700_000_000_001)  # a concurrent delete
    s, _ = write(s, make_clock({"n3/cc": 5}), "n1/aa", b"", 17)  # an empty value, a foreign entry
    s, _ = write(s, EMPTY_CLOCK, "n\u00e9/\u2603", b"\x00\xff" * 100, 0)  # non-ASCII actor
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
    a, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x")
    b, _ = write(EMPTY, EMPTY_CLOCK, "b", b"y")
    ab, ba = merge(a, b), merge(b, a)
    assert encode_record(ab) == encode_record(ba)
    shuffled = KeyState(clock=Clock({"b": 1, "a": 1}), siblings=ab.siblings)
    assert encode_record(shuffled) == encode_record(ab)


def state_with_holes() -> KeyState:
    """A stale replica that took a write whose writer had not seen (a, 2): its clock covers
    (a, 1) and (a, 3) but not (a, 2)."""
    s, _ = write(EMPTY, EMPTY_CLOCK, "a", b"x0")
    s, _ = write(s, s.clock, "a", b"B1")
    s, dot = write(s, make_clock({"a": 1}), "a", b"A1")
    context = put_context(s, dot)  # covers (a, 1) and (a, 3), not B1's (a, 2)
    stale, _ = write(EMPTY, EMPTY_CLOCK, "b", b"other")
    stale, _ = write(stale, context, "b", b"A2")
    return stale


def test_a_record_with_holes_round_trips_as_format_2() -> None:
    state = state_with_holes()
    assert state.clock.holes == {Dot("a", 2)} and state.clock.vector == {"a": 3, "b": 2}
    record = state_to_proto(state)
    assert record.format == RECORD_FORMAT_HOLES == 2
    assert [(h.actor, h.counter) for h in record.holes] == [("a", 2)]
    back = decode_record(encode_record(state))
    assert back == state and not back.clock.covers(Dot("a", 2))
    # A state without holes keeps format 1 (what nodes that predate holes read).
    assert state_to_proto(sample_state()).format == RECORD_FORMAT == 1


def record(**fields: object) -> bytes:
    return pb.KeyRecord(**fields).SerializeToString()  # type: ignore[arg-type]


def entry(actor: str, counter: int) -> pb.VectorEntry:
    return pb.VectorEntry(actor=actor, counter=counter)


def dot(actor: str, counter: int) -> pb.Dot:
    return pb.Dot(actor=actor, counter=counter)


def sibling(actor: str, counter: int, value: bytes = b"v") -> pb.Sibling:
    return pb.Sibling(dot_actor=actor, dot_counter=counter, value=value)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # not protobuf
        b"garbage!",
        b"\x0a\x05ab",  # truncated length-delimited field
        record(format=0),  # no format
        record(format=3),  # a future format
        record(format=1, vector=[entry("", 1)]),  # empty actor
        record(format=1, vector=[entry("a", 1), entry("a", 2)]),  # repeated actor
        record(format=1, vector=[entry("a", 1)], siblings=[sibling("a", 2)]),  # not covered
        record(format=1, vector=[entry("a", 1)], siblings=[sibling("", 1)]),  # empty dot actor
        record(format=1, vector=[entry("a", 1)], siblings=[sibling("a", 0)]),  # zero counter
        record(format=1, vector=[entry("a", 2)], siblings=[sibling("a", 1), sibling("a", 1)]),
        record(format=1) + BAD_UTF8_ENTRY,
        record(format=1, vector=[entry("a", 1), entry("z", 0)]),  # zero entry: not canonical
        record(format=1, vector=[entry("a" * (MAX_ACTOR_BYTES + 1), 1)]),  # actor too long
        record(format=1, vector=[entry("a", MAX_RECORD_COUNTER + 1)]),  # counter too large
        record(format=1, vector=[entry("a", 3)], holes=[dot("a", 1)]),  # holes in format 1
        record(format=2, vector=[entry("a", 3)]),  # format 2 without holes: not canonical
        record(format=2, vector=[entry("a", 3)], holes=[dot("a", 3)]),  # a hole at the top
        record(format=2, vector=[entry("a", 3)], holes=[dot("b", 1)]),  # outside the vector
        record(format=2, vector=[entry("a", 3)], holes=[dot("a", 1), dot("a", 1)]),
        record(format=2, vector=[entry("a", 3)], holes=[dot("a", 0)]),
        # A sibling whose dot is a hole of the clock is not covered by it.
        record(format=2, vector=[entry("a", 3)], holes=[dot("a", 2)], siblings=[sibling("a", 2)]),
    ],
)
def test_decode_record_refuses_unreadable_records(data: bytes) -> None:
    with pytest.raises(StorageError):
        decode_record(data)


def test_state_from_proto_raises_value_error() -> None:
    with pytest.raises(ValueError):
        state_from_proto(pb.KeyRecord(format=7))


def test_a_record_at_the_bounds_reads() -> None:
    actor = "\u00e9" * (MAX_ACTOR_BYTES // 2)  # two bytes each: exactly the limit
    data = record(format=1, vector=[entry(actor, MAX_RECORD_COUNTER)], siblings=[sibling(actor, 1)])
    expected = canonical_state(Clock({actor: MAX_RECORD_COUNTER}), [Sibling(Dot(actor, 1), b"v")])
    assert decode_record(data) == expected


# ---- contexts ----


def test_context_round_trip() -> None:
    clock = make_clock({"n1/aa": 3, "n2/bb": 1, "n\u00e9/\u2603": 2**40})
    data = encode_context(clock, KEY)
    assert isinstance(data, bytes) and data
    assert decode_context(data, KEY) == clock
    reordered = Clock(dict(reversed(list(clock.vector.items()))))
    assert encode_context(reordered, KEY) == data  # canonical


def test_a_context_with_holes_round_trips_as_format_2() -> None:
    clock = make_clock({"a": 5, "b": 2}, [Dot("a", 2), Dot("a", 4), Dot("b", 1)])
    data = encode_context(clock, KEY)
    message = pb.CausalContext.FromString(data)
    assert message.format == CONTEXT_FORMAT_HOLES == 2
    back = decode_context(data, KEY)
    assert back == clock
    assert [back.covers(Dot("a", n)) for n in range(1, 7)] == [1, 0, 1, 0, 1, 0]
    assert describe_clock(back) == "a:5 b:2 -a:2 -a:4 -b:1"


def test_context_carries_the_key_position() -> None:
    message = pb.CausalContext.FromString(encode_context(make_clock({"a": 1}), KEY))
    assert message.format == CONTEXT_FORMAT == 1
    assert message.key_position == hash_key(KEY)


def test_empty_context() -> None:
    assert encode_context(EMPTY_CLOCK, KEY) == b""
    assert decode_context(b"", KEY) == EMPTY_CLOCK


def test_context_of_another_key_is_refused() -> None:
    data = encode_context(make_clock({"a": 1}), b"key-1")
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
        context(format=3, vector=[entry("a", 1)]),
        context(format=1, vector=[entry("a", 1)], key_position=hash_key(KEY) ^ 1),
        context(format=1, vector=[entry("a", 1), entry("a", 2)]),  # repeated
        context(format=1, vector=[entry("", 1)]),  # empty actor
        context(format=1, vector=[entry("a", 0)]),  # zero counter
        context(format=1, vector=[entry("a", 1), entry("b", 0)]),
        context(format=1) + BAD_UTF8_ENTRY,
        # The counter that made every later write of the key fail with INTERNAL for ever.
        context(format=1, vector=[entry("a", 2**64 - 1)]),
        context(format=1, vector=[entry("a", MAX_CONTEXT_COUNTER + 1)]),
        context(format=1, vector=[entry("a" * (MAX_ACTOR_BYTES + 1), 1)]),  # 3 KB names, ...
        context(format=1, vector=[entry("a", 3)], holes=[dot("a", 1)]),  # holes need format 2
        context(format=2, vector=[entry("a", 3)]),  # format 2 without holes
        context(format=2, vector=[entry("a", 3)], holes=[dot("a", 3)]),  # at the top
        context(format=2, vector=[entry("a", 3)], holes=[dot("b", 1)]),  # outside the vector
        context(format=2, vector=[entry("a", 3)], holes=[dot("a", 1), dot("a", 1)]),
        context(format=2, vector=[entry("a", 3)], holes=[dot("", 1)]),
    ],
)
def test_decode_context_refuses_what_kvstore_did_not_make(data: bytes) -> None:
    with pytest.raises(InvalidContext) as info:
        decode_context(data, KEY)
    assert isinstance(info.value, InvalidArgument)


def test_decode_context_accepts_the_bounds_themselves() -> None:
    actor = "a" * MAX_ACTOR_BYTES
    clock = decode_context(context(format=1, vector=[entry(actor, MAX_CONTEXT_COUNTER)]), KEY)
    assert clock == Clock({actor: MAX_CONTEXT_COUNTER})


def test_decode_context_refuses_too_many_entries() -> None:
    entries = [entry(f"a{i}", 2) for i in range(MAX_CONTEXT_ENTRIES + 1)]
    with pytest.raises(InvalidContext, match="entries"):
        decode_context(context(format=1, vector=entries), KEY)
    assert len(decode_context(context(format=1, vector=entries[:-1]), KEY).vector) == 4096
    # Holes count as entries too.
    holes = [dot("a0", 1)]
    with pytest.raises(InvalidContext, match="entries"):
        decode_context(context(format=2, vector=entries[:-1], holes=holes), KEY)
    clock = decode_context(context(format=2, vector=entries[:-2], holes=holes), KEY)
    assert clock.entries == MAX_CONTEXT_ENTRIES


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_decode_context_of_random_bytes_raises_invalid_context(data: bytes) -> None:
    # Random bytes can only pass with format 1 or 2 and this key's exact 64-bit position.
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
    assert all(state.clock.covers(s.dot) for s in state.siblings)


actors = st.text(min_size=1, max_size=8)
vectors = st.dictionaries(actors, st.integers(1, MAX_CONTEXT_COUNTER), max_size=6)


@st.composite
def clocks(draw: st.DrawFn) -> Clock:
    vector = draw(vectors)
    holes = [
        Dot(actor, draw(st.integers(1, counter)))
        for actor, counter in vector.items()
        if draw(st.booleans())
    ]
    return make_clock(vector, holes)


@settings(max_examples=300, deadline=None)
@given(clocks(), st.binary(min_size=1, max_size=40))
def test_context_round_trip_property(clock: Clock, key: bytes) -> None:
    assert decode_context(encode_context(clock, key), key) == clock


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c", "d", "\u00e9"]),  # not the actors of state_with_holes
            st.one_of(st.none(), st.binary(max_size=8)),
            st.integers(0, 2**62),
        ),
        max_size=8,
    )
)
def test_record_round_trip_property(writes: list[tuple[str, bytes | None, int]]) -> None:
    state = EMPTY
    for actor, value, ts in writes:
        state, _ = write(state, EMPTY_CLOCK, actor, value, ts)
    state = merge(state, state_with_holes())
    back = decode_record(encode_record(state))
    assert back == state
    assert timestamps(back) == timestamps(state)


# ---- write ids (issue 16) ----

# A record of a state with no write ids, as the codec wrote it before write ids existed
# (two siblings, a tombstone, a hole): write ids must not change a byte of it.
RECORD_BEFORE_WRITE_IDS = (
    b"\x08\x02\x12\x08\n\x04n1/1\x10\x02\x12\x08\n\x04n2/1\x10\x03\x1a\x12\n\x04n1/1\x10\x01"
    b'\x1a\x01v(\x80\xd0\x95\xff\xbc1\x1a\x0c\n\x04n1/1\x10\x02 \x01(\x05"\x08\n\x04n2/1\x10\x01'
)


def _two_writes(first_id: bytes = b"", second_id: bytes = b"") -> KeyState:
    state, _ = write(EMPTY, EMPTY_CLOCK, "n1/1", b"v", 1700000000000, first_id)
    hole = Clock({"n2/1": 3}, [Dot("n2/1", 1)])
    state, _ = write(state, hole, "n1/1", None, 5, second_id)
    return state


def test_a_record_without_write_ids_is_encoded_as_before_and_reads_back() -> None:
    state = _two_writes()
    assert encode_record(state) == RECORD_BEFORE_WRITE_IDS
    back = decode_record(RECORD_BEFORE_WRITE_IDS)
    assert back == state and [s.write_id for s in back.siblings] == [b"", b""]


def test_write_ids_round_trip_bit_exactly() -> None:
    state = _two_writes(bytes(range(16)), b"\x00" * 64)
    data = encode_record(state)
    assert data != RECORD_BEFORE_WRITE_IDS
    back = decode_record(data)
    assert [s.write_id for s in back.siblings] == [bytes(range(16)), b"\x00" * 64]
    assert encode_record(back) == data
    assert pb.KeyRecord.FromString(data).siblings[0].write_id == bytes(range(16))
    assert state_from_proto(state_to_proto(state)).siblings[1].write_id == b"\x00" * 64


def test_a_record_with_a_write_id_past_its_bound_is_refused() -> None:
    record = state_to_proto(_two_writes(b"ok"))
    record.siblings[0].write_id = b"x" * 65
    with pytest.raises(StorageError, match="write id is at most 64 bytes"):
        decode_record(record.SerializeToString())

"""The native record and context codec (kvstore._native, used by kvstore.storage.codec)
against the protobuf path it replaced (codec.*_reference), on random input.

- Writing: the same bytes as `SerializeToString(deterministic=True)` for random states and
  clocks, or the same exception type where protobuf refuses a value.
- Reading valid bytes: the same state (vector order and timestamps included).
- Reading anything else: records and contexts are untrusted (disk, peers, clients), so the
  native reader must refuse exactly the bytes the reference refuses, and say the same
  about a context. Inputs: random bytes; valid encodings with noise woven in at every level
  (unknown fields of every wire type, groups, known fields repeated or with another wire
  type, non-minimal and overlong varints, bad UTF-8), then truncated, bit-flipped, cut or
  padded.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, TypeAlias

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_versions import actor_ids, clocks, same_clock, same_state, states

from kvstore import _native
from kvstore._native import hash_key
from kvstore.core.limits import MAX_CONTEXT_ENTRIES
from kvstore.core.ring import RoutedKey
from kvstore.core.versions import Clock, Dot, KeyState, Sibling, canonical_state, make_clock
from kvstore.errors import InvalidContext, StorageError
from kvstore.storage import codec

# KVSTORE_FUZZ_EXAMPLES=20000 runs a long fuzz; the default keeps `make test` quick.
FUZZ_EXAMPLES = int(os.environ.get("KVSTORE_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None)
RANDOM_BYTES = settings(max_examples=max(FUZZ_EXAMPLES, 1000), deadline=None)
KEY = b"user:42"
POSITION = hash_key(KEY)

# ---- wire format, spelt out for the tests ----


def varint(value: int, pad: int = 0) -> bytes:
    """`value` as a varint, padded with `pad` redundant bytes (still the same value)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            break
        out.append(byte | 0x80)
    if pad:
        out.append(byte | 0x80)
        out.extend(b"\x80" * (pad - 1))
        byte = 0
    out.append(byte)
    return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


# A message under construction: raw chunks, and submessages (field, chunks) whose length
# prefix is written when the whole is serialized.
Chunk: TypeAlias = "bytes | tuple[int, list[Chunk]]"


def serialize(chunks: list[Chunk]) -> bytes:
    out = bytearray()
    for chunk in chunks:
        if isinstance(chunk, bytes):
            out += chunk
        else:
            body = serialize(chunk[1])
            out += tag(chunk[0], 2) + varint(len(body)) + body
    return bytes(out)


def pair_chunks(actor: str, counter: int) -> list[Chunk]:
    raw = actor.encode()
    return [tag(1, 2) + varint(len(raw)) + raw, tag(2, 0) + varint(counter)]


def record_chunks(state: KeyState) -> list[Chunk]:
    """The record as codec writes it, field by field."""
    chunks: list[Chunk] = [tag(1, 0) + varint(2 if state.clock.holes else 1)]
    for actor, counter in sorted(state.clock.vector.items()):
        chunks.append((2, pair_chunks(actor, counter)))
    for s in state.siblings:
        body = pair_chunks(s.dot.actor, s.dot.counter)
        if s.value:
            body.append(tag(3, 2) + varint(len(s.value)) + s.value)
        if s.value is None:
            body.append(tag(4, 0) + b"\x01")
        body.append(tag(5, 0) + varint(s.timestamp_ms % 2**64))
        if s.write_id:
            body.append(tag(6, 2) + varint(len(s.write_id)) + s.write_id)
        chunks.append((3, body))
    for hole in sorted(state.clock.holes):
        chunks.append((4, pair_chunks(hole.actor, hole.counter)))
    return chunks


def context_chunks(clock: Clock, position: int) -> list[Chunk]:
    chunks: list[Chunk] = [tag(1, 0) + varint(2 if clock.holes else 1)]
    for actor, counter in sorted(clock.vector.items()):
        chunks.append((2, pair_chunks(actor, counter)))
    chunks.append(tag(3, 1) + position.to_bytes(8, "little"))
    for hole in sorted(clock.holes):
        chunks.append((4, pair_chunks(hole.actor, hole.counter)))
    return chunks


# ---- noise: what a reader must skip, take, or refuse ----

field_numbers = st.sampled_from([0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 15, 16, 2047, 2**29 - 1])
varint_values = st.one_of(
    st.integers(0, 3),
    st.integers(0, 2**64 - 1),
    st.sampled_from([2**31, 2**32 + 1, 2**62, 2**62 + 1, 2**63, 2**63 + 1, 2**64 - 1]),
)
texts = st.one_of(
    st.text(max_size=4).map(str.encode),
    st.sampled_from([b"", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\x00"]),
    st.binary(max_size=5),
)


@st.composite
def varints(draw: st.DrawFn) -> bytes:
    value = draw(varint_values)
    data = varint(value, draw(st.sampled_from([0, 0, 0, 1, 3])))
    if draw(st.integers(0, 19)) == 0:
        data = varint(value % 2**63, 10 - len(varint(value % 2**63)))  # 11 bytes: too long
    return data


@st.composite
def noise(draw: st.DrawFn, depth: int = 2) -> bytes:
    field = draw(field_numbers)
    wire = draw(st.sampled_from([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7]))
    head = tag(field, wire)
    if wire == 0:
        return head + draw(varints())
    if wire == 1:
        return head + draw(st.binary(min_size=8, max_size=8))
    if wire == 5:
        return head + draw(st.binary(min_size=4, max_size=4))
    if wire == 2:
        if depth and draw(st.booleans()):
            body = b"".join(draw(st.lists(noise(depth - 1), max_size=3)))
        else:
            body = draw(texts)
        return head + varint(len(body)) + body
    if wire == 3 and depth:
        inner = b"".join(draw(st.lists(noise(depth - 1), max_size=3)))
        closing = draw(st.sampled_from([field, field, field, field + 1, 0]))
        return head + inner + tag(closing, 4)
    return head  # a group with no room to nest, an end tag, wire types 6 and 7


@st.composite
def noisy(draw: st.DrawFn, chunks: list[Chunk], depth: int = 0) -> list[Chunk]:
    """The chunks with noise inserted, here and inside the submessages."""
    out: list[Chunk] = []
    for chunk in chunks:
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(noise()))
        if isinstance(chunk, tuple) and depth == 0:
            chunk = (chunk[0], draw(noisy(chunk[1], depth + 1)))
        out.append(chunk)
        if draw(st.integers(0, 9)) == 0:
            out.append(chunk)  # a field repeated (a repeated field gains an element)
    if draw(st.integers(0, 5)) == 0:
        out.append(draw(noise()))
    return out


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """`data`, often as is, else truncated, bit-flipped, cut or padded with a byte."""
    how = draw(st.sampled_from(["as is", "as is", "truncate", "flip", "cut", "insert"]))
    if how == "as is" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if how == "cut":
        return data[:at] + data[at + 1 :]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at:]


# ---- the checks ----


def same_answer(native_call: Callable[[], Any], reference_call: Callable[[], Any]) -> Any:
    try:
        expected = reference_call()
    except Exception as exc:
        with pytest.raises(type(exc)):
            native_call()
        return None
    got = native_call()
    assert got == expected
    return got


def check_record(data: bytes) -> bool:
    """The native reader refuses `data` exactly when the reference does (with the same
    message when the bytes parse), or reads the same state. True when accepted."""
    try:
        expected = codec.decode_record_reference(data)
    except StorageError as exc:
        with pytest.raises(StorageError) as refused:
            codec.decode_record(data)
        if not isinstance(exc.__cause__, DecodeError):
            assert str(refused.value) == str(exc)
        return False
    got = codec.decode_record(data)
    same_state(got, expected)
    assert codec.encode_record(got) == codec.encode_record_reference(expected)
    return True


def check_context(data: bytes, key: bytes = KEY) -> bool:
    try:
        expected = codec.decode_context_reference(data, key)
    except InvalidContext as exc:
        with pytest.raises(InvalidContext) as refused:
            codec.decode_context(data, key)
        assert str(refused.value) == str(exc)
        return False
    same_clock(codec.decode_context(data, key), expected)
    return True


# ---- writing ----


@st.composite
def edge_states(draw: st.DrawFn) -> KeyState:
    """States at and past the bounds protobuf checks (uint64 counters, int64 stamps)."""
    counter = draw(st.sampled_from([1, 127, 128, 2**63, 2**64 - 1, 2**64, -1]))
    stamp = draw(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1]))
    actor = draw(st.sampled_from(["a", "\u00e9" * 64, "x" * 200, "\ud800"]))
    value = draw(st.sampled_from([None, b"", b"v", b"\x00" * 300]))
    write_id = draw(st.sampled_from([b"", b"\x00", b"i" * 64, b"i" * 65, b"\x80" * 200]))
    dot = Dot(actor, draw(st.sampled_from([counter, 1])))
    return KeyState(Clock({actor: counter}), (Sibling(dot, value, stamp, write_id),))


@FUZZ
@given(st.one_of(states(), states(counters=2**64 - 1), edge_states()))
def test_encode_record_makes_the_bytes_protobuf_makes(state: KeyState) -> None:
    data = same_answer(
        lambda: codec.encode_record(state), lambda: codec.encode_record_reference(state)
    )
    if data is not None:
        assert type(data) is bytes
        check_record(data)  # (what it wrote reads back, or is refused, as the reference)


@FUZZ
@given(
    st.one_of(clocks(), clocks(counters=2**64 - 1, max_actors=8)),
    st.one_of(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1)),
)
def test_encode_context_makes_the_bytes_protobuf_makes(clock: Clock, position: int) -> None:
    key = RoutedKey(b"k", position)  # any position, 0 (left out of the bytes) included
    same_answer(
        lambda: codec.encode_context(clock, key), lambda: codec.encode_context_reference(clock, key)
    )


def test_encode_refuses_what_protobuf_refuses() -> None:
    bad: list[KeyState] = [
        KeyState(Clock({"a": 1}), (Sibling(Dot("a", 1), "text"),)),  # type: ignore[arg-type]
        KeyState(Clock({"a": 1}), (Sibling(Dot("a", 1), b"x", True),)),
        KeyState(Clock({"a": 1}), (Sibling(Dot("a", 1), b"x", 1.5),)),  # type: ignore[arg-type]
        KeyState(Clock({"a": 1.0}), ()),  # type: ignore[dict-item]
        KeyState(Clock({"a": True}), ()),
        KeyState(Clock({1: 1}), ()),  # type: ignore[dict-item]
        KeyState(Clock({"a": 2**64}), ()),
        KeyState(Clock({"\udfff": 1}), ()),
    ]
    for state in bad:
        same_answer(
            lambda state=state: codec.encode_record(state),
            lambda state=state: codec.encode_record_reference(state),
        )


# ---- reading valid records and contexts ----


@FUZZ
@given(st.one_of(states(), states(counters=2**63)))
def test_decode_record_reads_what_the_reference_reads(state: KeyState) -> None:
    data = codec.encode_record_reference(state)
    assert check_record(data)
    assert codec.decode_record(data) == state
    assert codec.decode_record(bytearray(data)) == state  # any bytes-like input


@FUZZ
@given(st.one_of(clocks(), clocks(counters=2**62, max_actors=8)))
def test_decode_context_reads_what_the_reference_reads(clock: Clock) -> None:
    data = codec.encode_context_reference(clock, KEY)
    assert check_context(data)  # (empty bytes for an empty clock: no context)
    assert codec.decode_context(data, KEY) == clock
    assert not check_context(data, b"another key") or not data


# ---- reading anything: refuse exactly what the reference refuses ----


@RANDOM_BYTES
@given(st.binary(max_size=40))
def test_decode_of_random_bytes_refuses_as_the_reference(data: bytes) -> None:
    check_record(data)
    check_context(data)


@st.composite
def woven_records(draw: st.DrawFn) -> bytes:
    state = draw(st.one_of(states(), states(counters=2**63 + 1)))
    return draw(damaged(serialize(draw(noisy(record_chunks(state))))))


@st.composite
def woven_contexts(draw: st.DrawFn) -> bytes:
    clock = draw(st.one_of(clocks(), clocks(counters=2**62 + 1)))
    return draw(damaged(serialize(draw(noisy(context_chunks(clock, POSITION))))))


@FUZZ
@given(woven_records())
def test_decode_record_of_noisy_records_refuses_as_the_reference(data: bytes) -> None:
    check_record(data)


@FUZZ
@given(woven_contexts())
def test_decode_context_of_noisy_contexts_refuses_as_the_reference(data: bytes) -> None:
    check_context(data)


@st.composite
def invalid_records(draw: st.DrawFn) -> bytes:
    """Well-formed protobuf that breaks the model's rules: any format, actors, counters
    (zero, past the bounds), holes anywhere, siblings repeated or outside the clock."""
    counters = st.one_of(st.integers(0, 4), st.sampled_from([2**62, 2**62 + 1, 2**63 + 1]))
    actors = st.one_of(actor_ids, st.sampled_from(["", "y" * 128, "y" * 129, "\u00e9" * 65]))
    chunks: list[Chunk] = [tag(1, 0) + varint(draw(st.integers(0, 3)))]
    for field in (2, 4, 3, 2):
        for _ in range(draw(st.integers(0, 3))):
            body = pair_chunks(draw(actors), draw(counters))
            if field == 3 and draw(st.booleans()):
                body.append(tag(4, 0) + b"\x01")
            if field == 3 and draw(st.booleans()):  # write ids around their bound
                write_id = b"w" * draw(st.sampled_from([0, 1, 16, 64, 65, 300]))
                body.append(tag(6, 2) + varint(len(write_id)) + write_id)
            chunks.append((field, body))
    return serialize(chunks)


@FUZZ
@given(invalid_records())
def test_decode_of_rule_breaking_records_refuses_as_the_reference(data: bytes) -> None:
    check_record(data)
    # The same fields as a context (siblings are then an unknown field 3 of another wire
    # type, or a key position when 8 bytes long; a matching one is added).
    check_context(data + tag(3, 1) + POSITION.to_bytes(8, "little"))


# ---- the corners, by hand ----


def nested_groups(depth: int, field: int = 9) -> bytes:
    return tag(field, 3) * depth + tag(field, 4) * depth


ENTRY = serialize([(2, pair_chunks("a", 1))])
SIBLING = serialize([(3, pair_chunks("a", 1))])


@pytest.mark.parametrize(
    "data",
    [
        b"\x08\x01",  # format only: the empty state
        b"\x08\x01" + ENTRY + SIBLING,
        b"\x08\x81\x80\x80\x80\x10" + ENTRY,  # format 2**32 + 1 reads as 1 (uint32)
        b"\x08\x01\x08\x02" + ENTRY,  # the last format wins
        b"\x08\x01" + b"\x0a\x00" + ENTRY,  # format with another wire type: unknown
        b"\x08\x01\x10\x05" + ENTRY,  # vector as a varint: unknown
        b"\x08\x01" + nested_groups(99) + ENTRY,
        b"\x08\x01" + nested_groups(100) + ENTRY,  # upb's depth limit: 100 at the top
        b"\x08\x01" + nested_groups(101) + ENTRY,
        b"\x08\x01" + serialize([(2, [nested_groups(99), *pair_chunks("a", 1)])]),
        b"\x08\x01" + serialize([(2, [nested_groups(100), *pair_chunks("a", 1)])]),
        b"\x08\x01" + tag(9, 3) + b"\x00\x00" + tag(9, 4) + ENTRY,  # field 0 inside a group
        b"\x08\x01" + tag(9, 3) + b"\x03\x04" + tag(9, 4) + ENTRY,
        b"\x08\x01" + tag(9, 3) + tag(10, 4) + ENTRY,  # a group closed by another field
        b"\x08\x01" + tag(9, 3) + ENTRY,  # never closed
        b"\x08\x01" + tag(9, 4) + ENTRY,  # an end tag with no group
        b"\x08\x01" + tag(2, 3) + tag(2, 4) + ENTRY,  # a known field as a group: skipped
        b"\x08\x01\x00\x00" + ENTRY,  # field 0
        b"\x08\x01\x02\x00" + ENTRY,
        b"\x08\x01" + tag(9, 6) + ENTRY,  # wire types 6 and 7
        b"\x08\x01" + tag(9, 7) + ENTRY,
        b"\x08\x01" + tag(2**29 - 1, 0) + b"\x01" + ENTRY,  # the largest field number
        b"\x08\x01\xf8\xff\xff\xff\x1f\x01" + ENTRY,  # a tag past 32 bits
        b"\x08\x01\x88\x80\x80\x80\x00\x01" + ENTRY,  # a 5-byte tag: allowed
        b"\x08\x01\x88\x80\x80\x80\x80\x00\x01" + ENTRY,  # a 6-byte tag: not
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f" + ENTRY,  # 10 bytes, bits past 64
        b"\x08\x81\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00" + ENTRY,  # 11 bytes
        b"\x08\x01" + tag(9, 2) + varint(2**31 - 1) + ENTRY,  # a length past INT32_MAX
        b"\x08\x01" + tag(9, 2) + varint(2**64 - 1) + ENTRY,
        b"\x08\x01" + tag(9, 1) + b"\x00" * 7,  # fixed64 cut short
        b"\x08\x01" + tag(9, 5) + b"\x00" * 3,
        b"\x08\x01\x12\x02\x10\x80\x01",  # a varint running past its submessage
        b"\x08\x01\x12\x04\x0a\x02\xc0\x80",  # overlong UTF-8
        b"\x08\x01\x12\x05\x0a\x03\xed\xa0\x80",  # an encoded surrogate
        b"\x08\x01\x12\x06\x0a\x04\xf4\x90\x80\x80",  # past U+10FFFF
        b"\x08\x01\x12\x05\x0a\x01\xff" + ENTRY[2:],  # bad UTF-8 in an overwritten actor
        b"\x08\x01\x12\x03\x0a\x01\x00\x10\x01",  # NUL is UTF-8
        b"\x08\x01\x12\x01\x0c",  # an end tag inside a submessage
        b"\x08\x01" + ENTRY + serialize([(3, [*pair_chunks("a", 1), tag(4, 0) + b"\x02"])]),
        b"\x08\x01" + ENTRY + serialize([(3, [*pair_chunks("a", 1), tag(3, 2) + b"\x01v"])]),
        # A tombstone's value is dropped; a value field repeated: the last wins.
        b"\x08\x01"
        + ENTRY
        + serialize([(3, [*pair_chunks("a", 1), b"\x1a\x01v\x20\x01\x1a\x02vw"])]),
        b"\x08\x01" + ENTRY + serialize([(3, [*pair_chunks("a", 1), b"\x1a\x01v\x1a\x02vw"])]),
        b"\x08\x01"
        + ENTRY
        + serialize([(3, [*pair_chunks("a", 1), tag(5, 0) + varint(2**64 - 1)])]),
    ],
)
def test_decode_record_corners_refuse_as_the_reference(data: bytes) -> None:
    check_record(data)
    check_context(data.replace(b"\x08\x01", b"\x08\x01\x19" + POSITION.to_bytes(8, "little"), 1))


def test_decode_record_corner_cases_really_are_accepted_and_refused() -> None:
    """Controls for the corners above: both outcomes occur, so the check has teeth."""
    assert check_record(b"\x08\x01" + nested_groups(100) + ENTRY)
    assert not check_record(b"\x08\x01" + nested_groups(101) + ENTRY)
    assert check_record(b"\x08\x81\x80\x80\x80\x10" + ENTRY)
    assert not check_record(b"\x08\x01\x12\x05\x0a\x01\xff" + ENTRY[2:])
    tombstone = b"\x08\x01" + ENTRY + serialize([(3, [*pair_chunks("a", 1), b"\x1a\x01v\x20\x01"])])
    assert codec.decode_record(tombstone).siblings[0].value is None


def test_too_many_context_entries_are_refused_as_the_reference() -> None:
    entries = [(2, pair_chunks(f"a{i}", 2)) for i in range(MAX_CONTEXT_ENTRIES + 1)]
    position = tag(3, 1) + POSITION.to_bytes(8, "little")
    over = serialize([tag(1, 0) + b"\x01", *entries, position])
    assert not check_context(over)
    at = serialize([tag(1, 0) + b"\x01", *entries[:-1], position])
    assert check_context(at)
    holes = serialize([tag(1, 0) + b"\x02", *entries[:-1], position, (4, pair_chunks("a0", 1))])
    assert not check_context(holes)


# ---- volume: many seeded mutations, fast ----


def test_decode_refuses_as_the_reference_on_seeded_mutations() -> None:
    rng = random.Random(14)
    base = [
        codec.encode_record_reference(state)
        for state in [
            canonical_state(
                make_clock({"a": 5, "b/2": 3, "\u00e9": 2}, [Dot("a", 2)]),
                [Sibling(Dot("a", 5), b"x" * 100, 7), Sibling(Dot("b/2", 3), None, -1)],
            ),
            canonical_state(make_clock({"n1": 1}), [Sibling(Dot("n1", 1), b"", 0)]),
        ]
    ]
    contexts = [
        codec.encode_context_reference(make_clock({"a": 9, "b": 2}, [Dot("a", 3)]), KEY),
        codec.encode_context_reference(make_clock({"a": 2**62}), KEY),
    ]
    accepted = 0
    for _ in range(4000):
        data = bytearray(rng.choice(base + contexts))
        for _ in range(rng.randint(1, 3)):
            data = data or bytearray(b"\x08")
            at = rng.randrange(len(data))
            kind = rng.randrange(4)
            if kind == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del data[at]
            elif kind == 2:
                data.insert(at, rng.randrange(256))
            else:
                data = data[: rng.randint(0, len(data))]
        accepted += check_record(bytes(data))
        accepted += check_context(bytes(data))
    assert accepted > 100  # mutations that still read: the comparison is not all refusals


def test_decode_takes_bytes_like_input_and_refuses_other_types() -> None:
    data = codec.encode_record_reference(
        canonical_state(Clock({"a": 1}), [Sibling(Dot("a", 1), b"x")])
    )
    assert codec.decode_record(memoryview(data)) == codec.decode_record(data)
    with pytest.raises(TypeError):
        _native.decode_record("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _native.encode_record(None)  # type: ignore[arg-type]


def test_native_constants_are_the_codec_constants() -> None:
    assert (codec.RECORD_FORMAT, codec.RECORD_FORMAT_HOLES) == (1, 2)
    assert (codec.CONTEXT_FORMAT, codec.CONTEXT_FORMAT_HOLES) == (1, 2)
    assert codec.MAX_ACTOR_BYTES == 128
    assert (codec.MAX_CONTEXT_COUNTER, codec.MAX_RECORD_COUNTER) == (2**62, 2**63)

"""Versioned encodings of the data model: stored records and client causal contexts.

Both are protobuf messages of proto/kvstore.proto with a `format` field; a reader refuses
formats it does not know rather than guessing.

Records and contexts are encoded and decoded on every request, several times: that runs in
kvstore._native, a hand-written reader and writer of exactly these messages. The protobuf
path below (state_to_proto / state_from_proto, and the *_reference functions built on it)
is the reference it is tested against, byte for byte and refusal for refusal
(tests/property/test_native_codec.py); the peer RPCs still use it where they hold messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from kvstore import _native
from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.cluster import ClusterView, Member, MemberStatus, RingLayout, RingState
from kvstore.core.limits import MAX_CONTEXT_ENTRIES
from kvstore.core.ring import RoutedKey
from kvstore.core.versions import EMPTY_CLOCK, Clock, Dot, KeyState, Sibling, canonical_state
from kvstore.errors import InvalidContext, StorageError

# Records and contexts are format 1 while their clock has no holes (the bytes are then what
# nodes that predate holes write and read) and format 2 when it has some: such a node
# refuses a format 2 record or context rather than take its holes as seen.
RECORD_FORMAT: int = _native.RECORD_FORMAT
RECORD_FORMAT_HOLES: int = _native.RECORD_FORMAT_HOLES
CONTEXT_FORMAT: int = _native.CONTEXT_FORMAT
CONTEXT_FORMAT_HOLES: int = _native.CONTEXT_FORMAT_HOLES

# Bounds on what a clock may hold, checked on every context a client sends and on every
# record read from disk or a peer. Actor ids are `node_id/epoch` (config caps node ids at
# 64 characters), so 128 bytes is room to spare. A context counter stays far below the
# record's ceiling: a write takes counter + 1, and no counter may leave uint64. (Defined in
# kvstore._native, whose decoders check them.)
MAX_ACTOR_BYTES: int = _native.MAX_ACTOR_BYTES
MAX_CONTEXT_COUNTER: int = _native.MAX_CONTEXT_COUNTER
MAX_RECORD_COUNTER: int = _native.MAX_RECORD_COUNTER
# A sibling's write id (client-generated: 16 random bytes by kvstore's client) is at most
# this long, in a record as on a put (core.limits checks puts against the same bound).
MAX_WRITE_ID_BYTES: int = _native.MAX_WRITE_ID_BYTES
# (How many entries a context may hold is core.limits.MAX_CONTEXT_ENTRIES; how far a write
# may grow a key's clock through its context, Limits.max_clock_entries.)


def _vector_entries(clock: Clock) -> list[pb.VectorEntry]:
    return [pb.VectorEntry(actor=a, counter=c) for a, c in sorted(clock.vector.items())]


def _hole_entries(clock: Clock) -> list[pb.Dot]:
    return [pb.Dot(actor=h.actor, counter=h.counter) for h in sorted(clock.holes)]


def _clock_from_entries(
    vector_entries: Sequence[pb.VectorEntry],
    hole_entries: Sequence[pb.Dot],
    max_counter: int,
) -> Clock:
    """A clock as sent; raises ValueError unless it is in canonical form and in bounds.
    (On every record read and every put: kept to one pass without helper calls.)"""
    vector = {entry.actor: entry.counter for entry in vector_entries}
    if len(vector) != len(vector_entries):
        raise ValueError("an actor is named twice")
    for actor, counter in vector.items():
        _check_dot(actor, counter, max_counter)
    if not hole_entries:
        return Clock(vector)
    holes = {Dot(entry.actor, entry.counter) for entry in hole_entries}
    if len(holes) != len(hole_entries):
        raise ValueError("a hole is repeated")
    for hole in holes:
        _check_dot(hole.actor, hole.counter, max_counter)
        if hole.counter >= vector.get(hole.actor, 0):
            raise ValueError("a hole is not below its actor's entry")
    return Clock(vector, frozenset(holes))


def _check_dot(actor: str, counter: int, max_counter: int) -> None:
    # A character is at most 4 bytes of UTF-8: short ids need no encoding to be measured.
    too_long = len(actor) * 4 > MAX_ACTOR_BYTES and len(actor.encode()) > MAX_ACTOR_BYTES
    if not actor or too_long:
        raise ValueError(f"an actor id must be 1 to {MAX_ACTOR_BYTES} bytes")
    if not 1 <= counter <= max_counter:
        raise ValueError(f"a counter must be in 1..{max_counter}")


def state_to_proto(state: KeyState) -> pb.KeyRecord:
    clock = state.clock
    record = pb.KeyRecord(
        format=RECORD_FORMAT_HOLES if clock.holes else RECORD_FORMAT,
        vector=_vector_entries(clock),
        siblings=[
            pb.Sibling(
                dot_actor=s.dot.actor,
                dot_counter=s.dot.counter,
                value=s.value or b"",
                tombstone=s.value is None,
                timestamp_ms=s.timestamp_ms,
                write_id=s.write_id,
            )
            for s in state.siblings
        ],
    )
    if clock.holes:
        record.holes.extend(_hole_entries(clock))
    return record


def state_from_proto(record: pb.KeyRecord) -> KeyState:
    """Rebuild a state; raises ValueError on a record that breaks the model's rules or
    bounds (records come from disk and from peers: neither is trusted to be well formed)."""
    if record.format not in (RECORD_FORMAT, RECORD_FORMAT_HOLES):
        raise ValueError(f"unknown record format {record.format}")
    if bool(record.holes) != (record.format == RECORD_FORMAT_HOLES):
        # One encoding per state: equal states must hash alike in anti-entropy.
        raise ValueError("a record has holes exactly when its format is 2")
    clock = _clock_from_entries(record.vector, record.holes, MAX_RECORD_COUNTER)
    siblings = []
    for s in record.siblings:
        if not s.dot_actor or s.dot_counter < 1:
            raise ValueError("record sibling has an invalid dot")
        dot = Dot(s.dot_actor, s.dot_counter)
        if not clock.covers(dot):
            raise ValueError("record sibling's dot is not covered by its clock")
        if len(s.write_id) > MAX_WRITE_ID_BYTES:
            raise ValueError(f"a sibling's write id is at most {MAX_WRITE_ID_BYTES} bytes")
        siblings.append(Sibling(dot, None if s.tombstone else s.value, s.timestamp_ms, s.write_id))
    if len({s.dot for s in siblings}) != len(siblings):
        raise ValueError("record has repeated dots")
    return canonical_state(clock, siblings)


# ---- the reference path, through protobuf ----


def encode_record_reference(state: KeyState) -> bytes:
    """What encode_record makes, through protobuf (the reference of the native writer)."""
    data: bytes = state_to_proto(state).SerializeToString(deterministic=True)
    return data


def decode_record_reference(data: bytes) -> KeyState:
    """What decode_record answers, through protobuf (the reference of the native reader)."""
    try:
        record = pb.KeyRecord.FromString(data)
        return state_from_proto(record)
    except (DecodeError, ValueError) as exc:
        raise StorageError(f"unreadable stored record: {exc}") from exc


def encode_context_reference(clock: Clock, key: bytes | RoutedKey) -> bytes:
    """What encode_context makes, through protobuf."""
    if not clock.vector:
        return b""
    context = pb.CausalContext(
        format=CONTEXT_FORMAT_HOLES if clock.holes else CONTEXT_FORMAT,
        vector=_vector_entries(clock),
        key_position=_position(key),
    )
    if clock.holes:
        context.holes.extend(_hole_entries(clock))
    data: bytes = context.SerializeToString(deterministic=True)
    return data


def decode_context_reference(data: bytes, key: bytes | RoutedKey) -> Clock:
    """What decode_context answers, through protobuf."""
    if not data:
        return EMPTY_CLOCK
    try:
        context = pb.CausalContext.FromString(data)
    except DecodeError as exc:
        raise InvalidContext("context is not a kvstore causal context") from exc
    if context.format not in (CONTEXT_FORMAT, CONTEXT_FORMAT_HOLES):
        raise InvalidContext(f"unknown context format {context.format}")
    if context.key_position != _position(key):
        raise InvalidContext("context belongs to another key: pass the context of this key")
    if len(context.vector) + len(context.holes) > MAX_CONTEXT_ENTRIES:
        raise InvalidContext(
            f"context has {len(context.vector) + len(context.holes)} entries; at most"
            f" {MAX_CONTEXT_ENTRIES} are allowed"
        )
    if bool(context.holes) != (context.format == CONTEXT_FORMAT_HOLES):
        raise InvalidContext("a context has holes exactly when its format is 2")
    try:
        return _clock_from_entries(context.vector, context.holes, MAX_CONTEXT_COUNTER)
    except ValueError as exc:
        raise InvalidContext(f"context is not well formed: {exc}") from None


# ---- what kvstore uses: the native codec ----


# The stored record of a state (KeyRecord bytes, deterministic: equal states, equal bytes);
# the native function itself, as no error needs translating.
encode_record = _native.encode_record


def decode_record(data: bytes) -> KeyState:
    """The state in a record from disk or a peer; StorageError on bytes that are not a
    record or a record that breaks the model's rules or bounds (neither source is trusted
    to be well formed)."""
    try:
        return _native.decode_record(data)
    except ValueError as exc:
        raise StorageError(f"unreadable stored record: {exc}") from exc


def _position(key: bytes | RoutedKey) -> int:
    return key.position if isinstance(key, RoutedKey) else _native.hash_key(key)


def encode_context(clock: Clock, key: bytes | RoutedKey) -> bytes:
    """The opaque context for `key`; empty bytes when it covers nothing."""
    if not clock.vector:
        return b""
    return _native.encode_context(clock, _position(key))


def decode_context(data: bytes, key: bytes | RoutedKey) -> Clock:
    """The clock in a client's context for `key`; empty bytes mean no context. Anything
    kvstore did not make, for this key and within the bounds above, is InvalidContext."""
    if not data:
        return EMPTY_CLOCK
    try:
        return _native.decode_context(data, _position(key), MAX_CONTEXT_ENTRIES)
    except ValueError as exc:
        raise InvalidContext(str(exc)) from None


def describe_clock(clock: Clock) -> str:
    """A clock for people (logs, reports): `a/1:3 b/7:1 -a/1:2` (a hole after a minus)."""
    parts = [f"{a}:{c}" for a, c in sorted(clock.vector.items())]
    parts.extend(f"-{h.actor}:{h.counter}" for h in sorted(clock.holes))
    return " ".join(parts)


HINT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class DecodedHint:
    target: str
    key: bytes
    state: KeyState
    stored_ms: int
    raw: bytes


def encode_hint(target: str, key: bytes, state: KeyState, stored_ms: int) -> bytes:
    data: bytes = pb.HintRecord(
        format=HINT_FORMAT,
        key=key,
        target=target,
        record=state_to_proto(state),
        stored_ms=stored_ms,
    ).SerializeToString(deterministic=True)
    return data


def decode_hint(data: bytes) -> DecodedHint:
    try:
        hint = pb.HintRecord.FromString(data)
        if hint.format != HINT_FORMAT:
            raise ValueError(f"unknown hint format {hint.format}")
        state = state_from_proto(hint.record)
    except (DecodeError, ValueError) as exc:
        raise StorageError(f"unreadable stored hint: {exc}") from exc
    return DecodedHint(hint.target, hint.key, state, hint.stored_ms, bytes(data))


# ---- cluster state (gossip and the meta column family) ----

CLUSTER_FORMAT = 1


def _layout_to_proto(layout: RingLayout) -> pb.RingLayoutState:
    return pb.RingLayoutState(members=list(layout.members), owners=list(layout.owners))


def _layout_from_proto(message: pb.RingLayoutState) -> RingLayout:
    members = tuple(message.members)
    owners = tuple(message.owners)
    if list(members) != sorted(set(members)):
        raise ValueError("ring members must be sorted and distinct")
    if not owners or any(o >= len(members) for o in owners):
        raise ValueError("ring owners must index its members")
    return RingLayout(members, owners)


def cluster_to_proto(view: ClusterView) -> pb.ClusterState:
    message = pb.ClusterState(
        format=CLUSTER_FORMAT,
        members=[
            pb.MemberState(
                address=m.address,
                node_id=m.node_id,
                status=m.status.value,
                incarnation=m.incarnation,
                version=m.version,
                ready_epoch=m.ready_epoch,
                ready_ring=m.ready_ring,
                client_address=m.client_address,
            )
            for m in sorted(view.members.values(), key=lambda m: m.address)
        ],
        has_ring=view.ring is not None,
        partitions=view.partitions,
        n=view.n,
    )
    if view.ring is not None:
        ring = message.ring
        ring.epoch = view.ring.epoch
        ring.current.CopyFrom(_layout_to_proto(view.ring.current))
        if view.ring.pending is not None:
            ring.has_pending = True
            ring.pending.CopyFrom(_layout_to_proto(view.ring.pending))
    return message


def cluster_from_proto(message: pb.ClusterState) -> ClusterView:
    """Raises ValueError on a state that is not well formed."""
    if message.format != CLUSTER_FORMAT:
        raise ValueError(f"unknown cluster state format {message.format}")
    members: dict[str, Member] = {}
    for m in message.members:
        try:
            status = MemberStatus(m.status)
        except ValueError:
            raise ValueError(f"unknown member status {m.status!r}") from None
        if not m.address or m.address in members:
            raise ValueError("member address empty or repeated")
        members[m.address] = Member(
            m.address,
            m.node_id,
            status,
            m.incarnation,
            m.version,
            m.ready_epoch,
            m.ready_ring,
            m.client_address,
        )
    ring = None
    if message.has_ring:
        current = _layout_from_proto(message.ring.current)
        pending = _layout_from_proto(message.ring.pending) if message.ring.has_pending else None
        if pending is not None and pending.partitions != current.partitions:
            raise ValueError("pending ring has another partition count")
        ring = RingState(message.ring.epoch, current, pending)
    return ClusterView(members, ring, message.partitions, message.n)


def encode_cluster(view: ClusterView) -> bytes:
    data: bytes = cluster_to_proto(view).SerializeToString(deterministic=True)
    return data


def decode_cluster(data: bytes) -> ClusterView:
    try:
        return cluster_from_proto(pb.ClusterState.FromString(data))
    except (DecodeError, ValueError) as exc:
        raise StorageError(f"unreadable stored cluster state: {exc}") from exc

"""Versioned encodings of the data model: stored records and client causal contexts.

Both are protobuf messages of proto/kvstore.proto with a `format` field; a reader refuses
formats it does not know rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from kvstore import _native
from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.cluster import ClusterView, Member, MemberStatus, RingLayout, RingState
from kvstore.core.versions import Dot, KeyState, Sibling, VersionVector, canonical_state
from kvstore.errors import InvalidContext, StorageError

RECORD_FORMAT = 1
CONTEXT_FORMAT = 1
# A context lists one entry per actor that ever wrote the key; more means it is not ours.
MAX_CONTEXT_ENTRIES = 4096


def _vector_entries(vector: VersionVector) -> list[pb.VectorEntry]:
    return [pb.VectorEntry(actor=a, counter=c) for a, c in sorted(vector.items())]


def state_to_proto(state: KeyState) -> pb.KeyRecord:
    return pb.KeyRecord(
        format=RECORD_FORMAT,
        vector=_vector_entries(state.vector),
        siblings=[
            pb.Sibling(
                dot_actor=s.dot.actor,
                dot_counter=s.dot.counter,
                value=s.value or b"",
                tombstone=s.value is None,
                timestamp_ms=s.timestamp_ms,
            )
            for s in state.siblings
        ],
    )


def state_from_proto(record: pb.KeyRecord) -> KeyState:
    """Rebuild a state; raises ValueError on a record that breaks the model's rules."""
    if record.format != RECORD_FORMAT:
        raise ValueError(f"unknown record format {record.format}")
    vector: dict[str, int] = {}
    for entry in record.vector:
        if not entry.actor or entry.actor in vector:
            raise ValueError("record vector has an empty or repeated actor")
        vector[entry.actor] = entry.counter
    siblings = []
    for s in record.siblings:
        dot = Dot(s.dot_actor, s.dot_counter)
        if not s.dot_actor or s.dot_counter < 1:
            raise ValueError("record sibling has an invalid dot")
        if vector.get(dot.actor, 0) < dot.counter:
            raise ValueError("record sibling's dot is not covered by its vector")
        siblings.append(Sibling(dot, None if s.tombstone else s.value, s.timestamp_ms))
    if len({s.dot for s in siblings}) != len(siblings):
        raise ValueError("record has repeated dots")
    return canonical_state(vector, siblings)


def encode_record(state: KeyState) -> bytes:
    data: bytes = state_to_proto(state).SerializeToString(deterministic=True)
    return data


def decode_record(data: bytes) -> KeyState:
    try:
        record = pb.KeyRecord.FromString(data)
        return state_from_proto(record)
    except (DecodeError, ValueError) as exc:
        raise StorageError(f"unreadable stored record: {exc}") from exc


def encode_context(vector: Mapping[str, int], key: bytes) -> bytes:
    """The opaque context for `key`; empty bytes when nothing was ever written."""
    if not vector:
        return b""
    data: bytes = pb.CausalContext(
        format=CONTEXT_FORMAT,
        vector=_vector_entries(vector),
        key_position=_native.hash_key(key),
    ).SerializeToString(deterministic=True)
    return data


def decode_context(data: bytes, key: bytes) -> dict[str, int]:
    """The version vector in a client's context for `key`; empty bytes mean no context."""
    if not data:
        return {}
    try:
        context = pb.CausalContext.FromString(data)
    except DecodeError as exc:
        raise InvalidContext("context is not a kvstore causal context") from exc
    if context.format != CONTEXT_FORMAT:
        raise InvalidContext(f"unknown context format {context.format}")
    if context.key_position != _native.hash_key(key):
        raise InvalidContext("context belongs to another key: pass the context of this key")
    if len(context.vector) > MAX_CONTEXT_ENTRIES:
        raise InvalidContext("context has too many entries")
    vector: dict[str, int] = {}
    for entry in context.vector:
        if not entry.actor or entry.actor in vector or entry.counter < 1:
            raise InvalidContext("context has an empty, repeated or zero entry")
        vector[entry.actor] = entry.counter
    return vector


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
            m.address, m.node_id, status, m.incarnation, m.version, m.ready_epoch, m.ready_ring
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

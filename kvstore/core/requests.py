"""The node's requests and answers as domain values: what the servicers translate protobuf
into and out of, and what the roles take and return. Nothing here knows the wire."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PutCommand:
    """A client's put, or its delete (`value` None: a tombstone)."""

    key: bytes
    value: bytes | None
    context: bytes = b""
    w: int = 0  # 0: the cluster's default
    timeout_ms: int = 0  # 0: the node's default
    strict: bool = False  # only primaries count (Riak's PW)
    return_body: bool = False
    # The client's id of this write (b"": none): a retry carries its first try's, and a
    # replica that already applied it answers without applying it again.
    write_id: bytes = b""


@dataclass(frozen=True, slots=True)
class ForwardedPut:
    """A put handed from a node that is not a replica of its key to one that is."""

    command: PutCommand
    hops: int
    # The sender's ring epoch and address: a receiver with an older ring catches up first.
    ring_epoch: int
    sender: str


@dataclass(frozen=True, slots=True)
class PutAnswer:
    context: bytes
    # The siblings after the write, when the put asked for them (return_body).
    values: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class GetAnswer:
    values: tuple[bytes, ...]
    context: bytes
    found: bool


NOT_FOUND = GetAnswer(values=(), context=b"", found=False)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    actor: str
    address: str
    members: tuple[str, ...]
    partitions: int
    n: int


@dataclass(frozen=True, slots=True)
class Location:
    """Where a key lives: its primaries now, and in the ring being moved to."""

    ring_epoch: int
    primaries: tuple[str, ...]
    pending_primaries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopologyMember:
    address: str  # the cluster address: the member's name in the ring
    client_address: str  # empty when its record predates client addresses
    status: str
    up: bool


@dataclass(frozen=True, slots=True)
class Topology:
    """What a ring-aware client routes by: the members and the current ring's layout
    (`ring_members` sorted, `owners[p]` indexing them; empty before a ring is known)."""

    ring_epoch: int
    partitions: int
    n: int
    members: tuple[TopologyMember, ...]
    ring_members: tuple[str, ...]
    owners: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MemberReport:
    address: str
    node_id: str
    status: str
    up: bool
    phi: float
    partitions_owned: int
    partitions_pending: int


@dataclass(frozen=True, slots=True)
class NodeStatus:
    address: str
    node_id: str
    ring_epoch: int
    ring_pending: bool
    members: tuple[MemberReport, ...]
    hints_pending: int
    hint_bytes: int
    handoffs_pending: int
    counters: Mapping[str, int] = field(default_factory=dict)

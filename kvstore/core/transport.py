"""The transport seam: every message one node sends another, as an interface over domain
values. The node's roles talk to peers only through it; `kvstore.rpc.peer.PeerClient` is
the gRPC implementation, and tests (later the simulator) drive the same roles over a fake
one. Nothing on this side of the seam knows gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Iterable, Sequence
from typing import Protocol

from kvstore.core.cluster import ClusterView
from kvstore.core.requests import ForwardedPut, PutAnswer
from kvstore.core.versions import KeyState

# A page of a peer's records: (key, state) pairs, the storage key of the last (the cursor
# for the next page), and whether it was the last page.
RecordPage = tuple[list[tuple[bytes, KeyState]], bytes, bool]


class PeerFailure(Exception):
    """A call to a peer did not succeed: the peer is down, slow, or refused. `code` names
    the status (gRPC's names: UNAVAILABLE, DEADLINE_EXCEEDED, ...) when one is known."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class PeerUnreachable(PeerFailure):
    """The request never left this node: no connection to the peer could be made, so it
    cannot have been applied there and may be sent elsewhere."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "UNAVAILABLE")


class PeerTransport(Protocol):
    """Node-to-node messages. The request path's (read, merge, forward_put) answer an
    awaitable (a future, or a coroutine: the gRPC transport chains futures, with no task per
    call). Every call takes a timeout in seconds and raises PeerFailure
    when the peer does not answer in time, cannot be reached, or refuses; `forward_put`
    differs (see there): it raises the KvError the peer answered with."""

    def read(
        self, address: str, key: bytes, timeout: float, data_only: bool = False
    ) -> Awaitable[KeyState | None]:
        """The peer's state of `key` as a replica (with its hints; `data_only`: without,
        and with a tombstone it purged lately, for tombstone GC)."""
        ...

    def merge(
        self, address: str, key: bytes, record: bytes, timeout: float, hint_for: str = ""
    ) -> Awaitable[None]:
        """Merge an encoded record (storage.codec.encode_record) at the peer: encoded once by
        the caller and shipped as the same bytes to every replica. `hint_for`: the peer is
        a fallback standing in for that primary and keeps a hint."""
        ...

    async def merge_batch(
        self, address: str, items: Iterable[tuple[bytes, KeyState]], timeout: float
    ) -> None:
        """Merge many states at the peer, in bounded requests; returns once all are durable
        there. On a failure, the states before it are merged and the rest not sent."""
        ...

    def forward_put(
        self, address: str, forward: ForwardedPut, timeout: float
    ) -> Awaitable[PutAnswer]:
        """Hand a put to a replica of its key. PeerUnreachable: it was never sent (it may go
        to another replica); PeerFailure: no answer in time, outcome unknown; a KvError: the
        peer's answer, or a connection cut mid-call (TransportError, outcome unknown)."""
        ...

    async def gossip(
        self, address: str, sender: str, view: ClusterView, timeout: float
    ) -> ClusterView:
        """Push this node's view of the cluster; the peer answers with its own."""
        ...

    async def tree_hashes(
        self, address: str, partition: int, level: int, indices: Sequence[int], timeout: float
    ) -> list[bytes]: ...

    async def segment_records(
        self,
        address: str,
        partition: int,
        segments: Sequence[int],
        after: bytes,
        timeout: float,
    ) -> RecordPage:
        """One page of the peer's records in some Merkle segments of a partition, in
        storage order after the storage key `after`."""
        ...

    async def partition_records(
        self, address: str, partition: int, after: bytes, limit: int, timeout: float
    ) -> RecordPage:
        """One page of the peer's records of a partition (ownership handoff)."""
        ...

    async def purge(self, address: str, key: bytes, state: KeyState, timeout: float) -> bool:
        """Delete the peer's record of `key` if it is still the tombstone `state`."""
        ...

    def retain(self, addresses: Collection[str]) -> None:
        """Close whatever is held open to peers not in `addresses` (departed members, names
        a forged message made this node dial): connections are kept only to members."""
        ...

    async def close(self) -> None: ...

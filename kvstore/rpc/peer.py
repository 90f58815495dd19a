"""The peer transport: long-lived channels to other nodes and the replica calls over them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.versions import KeyState
from kvstore.rpc.channels import ChannelPool
from kvstore.storage.codec import state_from_proto, state_to_proto

# The most bytes of records one page or batch between nodes carries (anti-entropy, ownership
# handoff, hint delivery), so a partition of any size moves in frames that fit. The gRPC
# frame limit (kvstore.node.server.max_message_bytes) is the largest record plus 1 MiB of
# slack, ~33 MB with default limits but barely over 1 MiB with small ones: a budget of that
# slack fits a frame whatever the limits, and at 1 MiB the per-call latency is still small
# beside the transfer. A page stops before the record that would take it past the budget,
# but always holds one: one record with every sibling always fits one frame, and a page that
# holds none would never advance.
PAGE_BYTES = 1024 * 1024

# What a record costs on the wire beside its key and its encoded state: the field tags and
# length prefixes of KeyedRecord / ReplicaMergeRequest, a few bytes; rounded up.
_RECORD_FRAMING_BYTES = 16

# (storage key, key, encoded record), as Storage.scan yields them.
StoredRecord = tuple[bytes, bytes, bytes]


def stored_record_bytes(key: bytes, raw: bytes) -> int:
    """A cheap estimate of a stored record's size in a page: the stored encoding is the
    KeyRecord message the page carries, so no re-encoding is needed to measure it."""
    return len(key) + len(raw) + _RECORD_FRAMING_BYTES


def take_page(
    scan: Iterable[StoredRecord], after: bytes, max_records: int | None = None
) -> tuple[list[StoredRecord], bytes, bool]:
    """The next page of a scan that starts after the storage key `after`: records up to
    PAGE_BYTES (and `max_records`), at least one; the storage key of its last record (`after`
    for an empty page), to pass as `after` for the next page; and whether the scan ended.

    The record that does not fit is read and dropped, not kept: the next page scans again
    from `last`, so no storage iterator outlives one page.
    """
    page: list[StoredRecord] = []
    page_bytes = 0
    last = after
    for record in scan:
        _, key, raw = record
        size = stored_record_bytes(key, raw)
        full = page_bytes + size > PAGE_BYTES or len(page) == max_records
        if page and full:
            return page, last, False
        page.append(record)
        page_bytes += size
        last = record[0]
    return page, last, True


class PeerFailure(Exception):
    """A replica call did not succeed: the peer is down, slow, or refused. `code` is the
    gRPC status name when the peer (or gRPC) answered with one."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _keyed_states(records: Iterable[pb.KeyedRecord]) -> list[tuple[bytes, KeyState]]:
    try:
        return [(r.key, state_from_proto(r.record)) for r in records]
    except ValueError as exc:
        raise PeerFailure(f"bad record: {exc}") from exc


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Notice a dead peer within seconds instead of waiting for TCP.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        # Come back quickly after a peer restarts (default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def check_page_advances(source: str, records: int, last: bytes, after: bytes, done: bool) -> None:
    """A page that is not the last must hold records and move the cursor: a peer that
    breaks this (a bug, another version) would otherwise keep a paging loop going for ever."""
    if not done and (not records or last <= after):
        raise PeerFailure(f"{source} sent a page that does not advance")


class PeerClient:
    """One channel per peer, created on first use and kept for the node's lifetime."""

    def __init__(self, max_message_bytes: int, routes: Mapping[str, str] | None = None) -> None:
        options = channel_options(max_message_bytes)
        # A peer is named by its advertised address; `routes` may say to dial another.
        dial = dict(routes or {})
        self._pool = ChannelPool(
            lambda address: grpc.aio.insecure_channel(dial.get(address, address), options=options),
            pb_grpc.PeerStub,
        )
        self._stub = self._pool.stub
        # Background work (gossip, anti-entropy, hint delivery, handoff) has channels of its
        # own: calling a peer that is not up yet (at start-up, after a crash) puts a channel
        # into reconnect backoff, where every call on it fails at once for up to two
        # seconds; the replica calls of client requests must not inherit that.
        # (gRPC shares connections between channels of equal settings unless told not to.)
        control_options = [*options, ("grpc.use_local_subchannel_pool", 1)]
        self._control = ChannelPool(
            lambda address: grpc.aio.insecure_channel(
                dial.get(address, address), options=control_options
            ),
            pb_grpc.PeerStub,
        )

    async def read(
        self, address: str, key: bytes, timeout: float, data_only: bool = False
    ) -> KeyState | None:
        try:
            reply = await self._stub(address).ReplicaRead(
                pb.ReplicaReadRequest(key=key, data_only=data_only),
                timeout=timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise PeerFailure(exc.code().name, exc.code().name) from exc
        if not reply.found:
            return None
        try:
            return state_from_proto(reply.record)
        except ValueError as exc:
            raise PeerFailure(f"bad record: {exc}") from exc

    async def merge(
        self,
        address: str,
        key: bytes,
        state: KeyState,
        timeout: float,
        hint_for: str | None = None,
    ) -> None:
        request = pb.ReplicaMergeRequest(
            key=key, record=state_to_proto(state), hint_for=hint_for or ""
        )
        await self._call(address, "ReplicaMerge", request, timeout, foreground=True)

    async def merge_batch(
        self, address: str, items: Iterable[tuple[bytes, KeyState]], timeout: float
    ) -> None:
        """Merge many states at the peer; returns once all are durable there.

        Sent in order as requests of at most PAGE_BYTES each (at least one state each), so a
        batch of any size fits the peer's frame limit; each request has `timeout`. Raises
        PeerFailure on the first request that fails: the states before it are merged, those
        after it are not sent (merges are idempotent, so the caller just retries them all).
        """
        batch: list[pb.ReplicaMergeRequest] = []
        batch_bytes = 0
        for key, state in items:
            item = pb.ReplicaMergeRequest(key=key, record=state_to_proto(state))
            item_bytes = item.ByteSize() + _RECORD_FRAMING_BYTES
            if batch and batch_bytes + item_bytes > PAGE_BYTES:
                await self._merge_request(address, batch, timeout)
                batch, batch_bytes = [], 0
            batch.append(item)
            batch_bytes += item_bytes
        if batch:
            await self._merge_request(address, batch, timeout)

    async def _merge_request(
        self, address: str, items: list[pb.ReplicaMergeRequest], timeout: float
    ) -> None:
        request = pb.ReplicaMergeBatchRequest(items=items)
        await self._call(address, "ReplicaMergeBatch", request, timeout)

    async def gossip(
        self, address: str, sender: str, state: pb.ClusterState, timeout: float
    ) -> pb.ClusterState:
        request = pb.GossipRequest(state=state, sender=sender)
        reply: pb.GossipResponse = await self._call(address, "Gossip", request, timeout)
        return reply.state

    async def tree_hashes(
        self, address: str, partition: int, level: int, indices: Sequence[int], timeout: float
    ) -> list[bytes]:
        request = pb.TreeHashesRequest(partition=partition, level=level, indices=list(indices))
        reply: pb.TreeHashesResponse = await self._call(address, "TreeHashes", request, timeout)
        return list(reply.hashes)

    async def segment_records(
        self,
        address: str,
        partition: int,
        segments: Sequence[int],
        after: bytes,
        timeout: float,
    ) -> tuple[list[tuple[bytes, KeyState]], bytes, bool]:
        """One page of a peer's records in some segments of a partition, in storage order
        after the storage key `after` (empty first): (records, last, done)."""
        request = pb.SegmentRecordsRequest(
            partition=partition, segments=list(segments), after=after
        )
        reply: pb.SegmentRecordsResponse = await self._call(
            address, "SegmentRecords", request, timeout
        )
        return _keyed_states(reply.records), reply.last, reply.done

    async def partition_records(
        self, address: str, partition: int, after: bytes, limit: int, timeout: float
    ) -> tuple[list[tuple[bytes, KeyState]], bytes, bool]:
        """One page of a peer's records of a partition: (records, last, done)."""
        request = pb.PartitionRecordsRequest(partition=partition, after=after, limit=limit)
        reply: pb.PartitionRecordsResponse = await self._call(
            address, "PartitionRecords", request, timeout
        )
        return _keyed_states(reply.records), reply.last, reply.done

    async def purge(self, address: str, key: bytes, state: KeyState, timeout: float) -> bool:
        """Delete the peer's record of `key` if it is still `state`; True if it did."""
        request = pb.PurgeRequest(key=key, record=state_to_proto(state))
        reply: pb.PurgeResponse = await self._call(address, "Purge", request, timeout)
        return reply.purged

    async def _call(
        self, address: str, method: str, request: Any, timeout: float, foreground: bool = False
    ) -> Any:
        stub = self._stub(address) if foreground else self._control.stub(address)
        try:
            # A replica call waits for a connection that is coming back (a restarted peer,
            # a channel in reconnect backoff) until its timeout instead of failing at once:
            # quorums are decided by whoever answers, and a silent primary of a write gets
            # a stand-in after replica_timeout_ms, so waiting delays no client.
            return await getattr(stub, method)(request, timeout=timeout, wait_for_ready=foreground)
        except grpc.aio.AioRpcError as exc:
            name, detail = exc.code().name, exc.details() or ""
            raise PeerFailure(f"{name}: {detail}" if detail else name, name) from exc

    async def forward_put(
        self, address: str, forward: pb.ForwardPutRequest, timeout: float
    ) -> pb.PutResponse:
        """Raises grpc.aio.AioRpcError unchanged: the caller needs the kvstore error inside."""
        response: pb.PutResponse = await self._stub(address).ForwardPut(forward, timeout=timeout)
        return response

    async def close(self) -> None:
        for channel in self._pool.take_channels() + self._control.take_channels():
            await channel.close()

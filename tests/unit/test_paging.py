"""Records moved between nodes in pages and batches bounded in bytes (PAGE_BYTES): segment
and partition pages, merge batches, and anti-entropy exchanges that span many pages.

Two real nodes (RocksDB storage in a tmp dir, the real PeerServicer) serve each other over
gRPC on 127.0.0.1 inside the test's event loop; the budget is patched small so a few hundred
small records span many pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.config import NodeConfig
from kvstore.core.antientropy import LEAVES, segment_of
from kvstore.core.limits import Limits, Quorum
from kvstore.core.partitions import partition_bits, segment_ranges
from kvstore.core.ring import Ring
from kvstore.core.transport import PeerFailure
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, merge, write
from kvstore.errors import InvalidArgument
from kvstore.node.antientropy import AntiEntropy
from kvstore.node.server import NodeParts, build_node, max_message_bytes, start_membership
from kvstore.rpc.auth import open_access
from kvstore.rpc.peer import PeerClient
from kvstore.rpc.servicers import PeerServicer
from kvstore.storage import paging as paging_module
from kvstore.storage.codec import encode_record
from kvstore.storage.engine import Storage, data_key, position_of
from kvstore.storage.paging import StoredRecord, stored_record_bytes, take_page

PARTITIONS = 4
BUDGET = 2048  # PAGE_BYTES in these tests: a few records of VALUE_BYTES per page
VALUE_BYTES = 300
TIMEOUT_S = 5.0


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(paging_module, "PAGE_BYTES", BUDGET)
    return BUDGET


def state_of(actor: str, value: bytes, timestamp_ms: int = 1) -> KeyState:
    state, _ = write(EMPTY, EMPTY_CLOCK, actor, value, timestamp_ms=timestamp_ms)
    return state


def value_of(name: bytes, size: int = VALUE_BYTES) -> bytes:
    return (name * (size // len(name) + 1))[:size]


def page_bytes(records: Iterable[tuple[bytes, KeyState]]) -> int:
    return sum(stored_record_bytes(key, encode_record(state)) for key, state in records)


def assert_within_budget(records: list[tuple[bytes, KeyState]]) -> None:
    # A page may pass the budget only when it is one record that alone does.
    assert len(records) == 1 or page_bytes(records) <= BUDGET


class RecordingServicer(PeerServicer):
    """The real servicer, remembering what it was sent: how callers split their data."""

    def __init__(self, parts: NodeParts) -> None:
        super().__init__(
            parts.replica,
            parts.coordinator,
            parts.gossip,
            parts.anti_entropy,
            parts.handoff,
            parts.admin,
        )
        self.merge_requests: list[pb.ReplicaMergeBatchRequest] = []
        self.segment_requests: list[pb.SegmentRecordsRequest] = []

    async def ReplicaMergeBatch(
        self, request: pb.ReplicaMergeBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicaMergeBatchResponse:
        self.merge_requests.append(request)
        return await super().ReplicaMergeBatch(request, context)

    async def SegmentRecords(
        self, request: pb.SegmentRecordsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SegmentRecordsResponse:
        self.segment_requests.append(request)
        return await super().SegmentRecords(request, context)


@dataclass
class RunningNode:
    parts: NodeParts
    storage: Storage
    peers: PeerClient
    servicer: RecordingServicer

    @property
    def address(self) -> str:
        return self.parts.address

    @property
    def anti_entropy(self) -> AntiEntropy:
        return self.parts.anti_entropy

    @property
    def ring(self) -> Ring:
        return self.parts.router.require_ring()


@asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    """Two nodes of one ring (n = 2: both hold every partition), serving each other."""
    servers = [grpc.aio.server() for _ in range(2)]
    # Ports are bound before the nodes exist: each node's ring names both addresses.
    addresses = tuple(f"127.0.0.1:{s.add_insecure_port('127.0.0.1:0')}" for s in servers)
    nodes: list[RunningNode] = []
    try:
        for i, (server, address) in enumerate(zip(servers, addresses, strict=True)):
            config = NodeConfig(
                node_id=f"n{i}",
                listen=address,
                advertise=address,
                data_dir=str(tmp_path / f"n{i}"),
                seeds=addresses,
                partitions=PARTITIONS,
                quorum=Quorum(n=2, r=1, w=1),
            )
            storage = Storage(config.data_dir)
            actor = storage.claim_identity(config.node_id)
            peers = PeerClient(max_message_bytes(config))
            parts = build_node(config, storage, actor, peers, start_membership(config, storage))
            servicer = RecordingServicer(parts)
            pb_grpc.add_PeerServicer_to_server(open_access("Peer", servicer), server)
            nodes.append(RunningNode(parts, storage, peers, servicer))
            await server.start()
        yield nodes[0], nodes[1]
    finally:
        for server in servers:
            await server.stop(grace=None)
        for test_node in nodes:
            await test_node.peers.close()
            test_node.storage.close()


def run(tmp_path: Path, test: Callable[[RunningNode, RunningNode], Awaitable[None]]) -> None:
    async def main() -> None:
        async with two_nodes(tmp_path) as (a, b):
            await test(a, b)

    asyncio.run(main())


def fill(storage: Storage, prefix: bytes, count: int, actor: str = "a/1") -> dict[bytes, KeyState]:
    records = {b"%s-%04d" % (prefix, i): state_of(actor, value_of(b"%d" % i)) for i in range(count)}
    storage.merge_many(records.items())
    return records


def everything(storage: Storage) -> dict[bytes, KeyState]:
    return dict(storage.items())


def partition_of(ring: Ring, key: bytes) -> int:
    return ring.partition_for_key(key)


# ---- take_page: the paging rule ----


def stored(key: bytes, size: int) -> StoredRecord:
    return (b"\0" * 8 + key, key, b"r" * size)


def test_a_page_stops_before_the_record_past_the_budget(small_pages: int) -> None:
    scan = [stored(b"k%d" % i, 500) for i in range(10)]
    page, last, done = take_page(scan, b"")
    assert page == scan[:3]  # 3 x (500 + 2 + framing) fits 2048; a 4th does not
    assert last == scan[2][0]
    assert not done


def test_one_oversize_record_is_a_page_of_its_own(small_pages: int) -> None:
    big, small = stored(b"big", 10 * BUDGET), stored(b"small", 10)
    assert take_page([big, small], b"") == ([big], big[0], False)
    assert take_page([small, big], b"") == ([small], small[0], False)
    assert take_page([big], b"") == ([big], big[0], True)


def test_an_empty_scan_is_a_last_page_that_keeps_the_cursor() -> None:
    assert take_page([], b"cursor") == ([], b"cursor", True)


def test_a_page_also_stops_at_the_record_limit(small_pages: int) -> None:
    scan = [stored(b"k%d" % i, 1) for i in range(5)]
    assert take_page(scan, b"", max_records=2) == (scan[:2], scan[1][0], False)
    assert take_page(scan[:2], b"", max_records=2) == (scan[:2], scan[1][0], True)


def test_the_budget_fits_a_frame_under_the_smallest_limits() -> None:
    # A full page plus its cursor must fit the frame of a node with the smallest limits.
    smallest = Limits(max_key_bytes=1, max_value_bytes=0, max_siblings=1)
    config = NodeConfig("n", "h:1", "h:1", "/nonexistent", (), limits=smallest)
    assert max_message_bytes(config) >= paging_module.PAGE_BYTES + 64


# ---- segments ----


def test_segment_ranges_are_the_positions_of_the_segments() -> None:
    ring = Ring(["a", "b"], partitions=16, n=2)
    bits = partition_bits(ring)
    ranges = segment_ranges(ring, 5, [9, 3, 4, 255, 4])
    assert len(ranges) == 3  # 3 and 4 are adjacent: one range
    for (low, high), segments in zip(ranges, [(3, 4), (9,), (255,)], strict=True):
        assert low >> (64 - bits) == 5 and (high - 1) >> (64 - bits) == 5
        assert segment_of(low, bits) == segments[0]
        assert segment_of(high - 1, bits) == segments[-1]
    with pytest.raises(InvalidArgument, match="segment"):
        segment_ranges(ring, 5, [LEAVES])


def test_segment_pages_fit_the_budget_and_cover_each_record_once(
    tmp_path: Path, small_pages: int
) -> None:
    async def test(a: RunningNode, b: RunningNode) -> None:
        records = fill(a.storage, b"key", 200)
        big = b"big"
        records[big] = state_of("a/1", value_of(b"x", 5 * BUDGET))
        a.storage.merge(big, records[big])
        ring = a.ring
        bits = partition_bits(ring)
        partition = partition_of(ring, big)
        big_segment = segment_of(position_of(data_key(big)), bits)
        # Every other segment, the big record's among them, and a run of adjacent ones.
        segments = sorted({*range(0, LEAVES, 2), big_segment, 101, 103})
        wanted = {
            key
            for key in records
            if partition_of(ring, key) == partition
            and segment_of(position_of(data_key(key)), bits) in segments
        }
        seen: list[bytes] = []
        pages: list[list[tuple[bytes, KeyState]]] = []
        after = b""
        while True:
            page, last, done = await b.peers.segment_records(
                a.address, partition, segments, after, TIMEOUT_S
            )
            assert_within_budget(page)
            pages.append(page)
            seen.extend(key for key, _ in page)
            assert all(state == records[key] for key, state in page)
            if done:
                break
            assert last > after
            after = last
        assert len(seen) == len(set(seen))  # each record once
        assert set(seen) == wanted
        assert [(big, records[big])] in pages
        assert len(pages) > 5
        # The local reading of the same segments agrees, in the same (storage) order.
        local = a.anti_entropy.segment_records(partition, segments)
        assert [key for key, _ in local] == seen

    run(tmp_path, test)


def test_partition_pages_fit_the_budget_and_the_record_limit(
    tmp_path: Path, small_pages: int
) -> None:
    async def test(a: RunningNode, b: RunningNode) -> None:
        records = fill(a.storage, b"key", 120)
        big = b"big"
        records[big] = state_of("a/1", value_of(b"x", 3 * BUDGET))
        a.storage.merge(big, records[big])
        for limit in (5_000, 2):
            seen: list[bytes] = []
            pages = 0
            for partition in range(PARTITIONS):
                after, done = b"", False
                while not done:
                    page, after, done = await b.peers.partition_records(
                        a.address, partition, after, limit, TIMEOUT_S
                    )
                    assert_within_budget(page)
                    assert len(page) <= limit
                    assert all(state == records[key] for key, state in page)
                    seen.extend(key for key, _ in page)
                    pages += 1
            assert sorted(seen) == sorted(records)  # each record once
            assert pages > PARTITIONS * 2

    run(tmp_path, test)


# ---- merge batches ----


def test_merge_batch_splits_into_requests_within_the_budget(
    tmp_path: Path, small_pages: int
) -> None:
    async def test(a: RunningNode, b: RunningNode) -> None:
        items = [(b"key-%04d" % i, state_of("b/1", value_of(b"%d" % i))) for i in range(50)]
        items.insert(20, (b"big", state_of("b/1", value_of(b"x", 4 * BUDGET))))
        await b.peers.merge_batch(a.address, items, TIMEOUT_S)
        requests = a.servicer.merge_requests
        assert len(requests) > 5
        for request in requests:
            assert len(request.items) == 1 or request.ByteSize() <= BUDGET
        assert [(item.key,) for r in requests for item in r.items] == [(k,) for k, _ in items]
        assert any(len(r.items) == 1 and r.items[0].key == b"big" for r in requests)
        assert everything(a.storage) == dict(items)
        # Nothing to send: no request at all.
        await b.peers.merge_batch(a.address, [], TIMEOUT_S)
        assert len(a.servicer.merge_requests) == len(requests)

    run(tmp_path, test)


def test_a_refused_item_of_merge_batch_is_left_out_alone(tmp_path: Path, small_pages: int) -> None:
    """One state the receiver refuses (here an empty key) must not block the others: a hint
    or a repair no replica takes would otherwise hold back every one sent with it."""

    async def test(a: RunningNode, b: RunningNode) -> None:
        items = [(b"key-%04d" % i, state_of("b/1", value_of(b"%d" % i))) for i in range(30)]
        items[15] = (b"", items[15][1])
        await b.peers.merge_batch(a.address, items, TIMEOUT_S)
        stored_keys = set(everything(a.storage))
        assert {key for key, _ in items if key} == stored_keys

    run(tmp_path, test)


# ---- anti-entropy exchanges over many pages ----


async def exchange_all(a: RunningNode, b: RunningNode) -> int:
    return sum([await a.anti_entropy.exchange(a.ring, p, b.address) for p in range(PARTITIONS)])


def test_an_exchange_spanning_many_pages_converges_both_ways(
    tmp_path: Path, small_pages: int
) -> None:
    async def test(a: RunningNode, b: RunningNode) -> None:
        only_a = fill(a.storage, b"only-a", 80, actor="a/1")
        only_b = fill(b.storage, b"only-b", 80, actor="b/1")
        same = fill(a.storage, b"same", 40)
        b.storage.merge_many(same.items())
        # Concurrent writes of one key on each side: both must end with both siblings.
        conflicting_a = fill(a.storage, b"both", 40, actor="a/1")
        conflicting_b = fill(b.storage, b"both", 40, actor="b/1")
        big = b"big-only-b"
        b.storage.merge(big, state_of("b/1", value_of(b"x", 4 * BUDGET)))

        repaired = await exchange_all(a, b)

        assert repaired == len(only_a) + len(only_b) + len(conflicting_a) + 1
        assert everything(a.storage) == everything(b.storage)
        for key, state in conflicting_a.items():
            assert a.storage.get(key) == merge(state, conflicting_b[key])
            assert len(b.storage.get(key).siblings) == 2  # type: ignore[union-attr]
        assert a.parts.counters["ae_keys_repaired"] == repaired
        assert a.parts.counters["ae_exchanges"] == PARTITIONS
        # Many pages each way, each within the budget.
        assert len(b.servicer.segment_requests) > 2 * PARTITIONS
        assert len(a.servicer.merge_requests) == 0  # a pulls; it is not pushed to
        assert len(b.servicer.merge_requests) > PARTITIONS
        for request in b.servicer.merge_requests:
            assert len(request.items) == 1 or request.ByteSize() <= BUDGET
        # Converged: a second pass finds nothing to do.
        assert await exchange_all(a, b) == 0

    run(tmp_path, test)


def test_an_exchange_rebuilds_a_wiped_peer_in_batches_within_the_budget(
    tmp_path: Path, small_pages: int
) -> None:
    async def test(a: RunningNode, b: RunningNode) -> None:
        records = fill(a.storage, b"key", 150)
        # The wiped peer answers each segment query with one empty last page; this node's
        # own records are still read and pushed a page at a time.
        assert await exchange_all(a, b) == len(records)
        assert everything(b.storage) == records
        assert len(b.servicer.segment_requests) == PARTITIONS
        assert len(b.servicer.merge_requests) > 2 * PARTITIONS
        for request in b.servicer.merge_requests:
            assert len(request.items) == 1 or request.ByteSize() <= BUDGET

    run(tmp_path, test)


def test_a_segment_page_that_does_not_advance_fails_the_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(a: RunningNode, b: RunningNode) -> None:
        records = fill(a.storage, b"key", 20)
        partition = partition_of(a.ring, next(iter(records)))

        async def stuck(
            address: str, partition: int, segments: list[int], after: bytes, timeout: float
        ) -> tuple[list[tuple[bytes, KeyState]], bytes, bool]:
            return [], after, False  # "more to come", from where it already was

        monkeypatch.setattr(a.peers, "segment_records", stuck)
        with pytest.raises(PeerFailure, match="does not advance"):
            await a.anti_entropy.exchange(a.ring, partition, b.address)

    run(tmp_path, test)

"""A node's metrics: per-request counts and latencies, the event counters and storage read at
scrape time, the HTTP endpoint, and the servicer's instrumentation."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.requests import GetAnswer, PutAnswer, PutCommand
from kvstore.errors import (
    InvalidKey,
    KvError,
    Overloaded,
    StorageUnavailable,
    Timeout,
    TooManySiblings,
    Unavailable,
)
from kvstore.node.metrics import OPERATIONS, NodeMetrics, outcome_of
from kvstore.node.metricsserver import MAX_HEAD_BYTES, MetricsServer
from kvstore.rpc.servicers import KVServicer
from kvstore.storage.engine import Storage


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_record_counts_by_operation_and_outcome_and_observes_latency() -> None:
    metrics = NodeMetrics(Counter())
    metrics.record("get", None, 0.001)
    metrics.record("get", None, 0.003)
    metrics.record("put", Unavailable("1 of 2"), 0.2)
    metrics.record("delete", None, 0.0004)
    assert sample(metrics, "kvstore_requests_total", operation="get", outcome="ok") == 2
    assert sample(metrics, "kvstore_requests_total", operation="put", outcome="unavailable") == 1
    assert sample(metrics, "kvstore_requests_total", operation="put", outcome="ok") == 0
    assert sample(metrics, "kvstore_requests_total", operation="delete", outcome="ok") == 1
    assert sample(metrics, "kvstore_request_duration_seconds_count", operation="get") == 2
    assert sample(metrics, "kvstore_request_duration_seconds_sum", operation="get") == (
        pytest.approx(0.004)
    )
    # 0.001 falls in the 1 ms bucket, 0.003 in the 5 ms one (buckets are cumulative).
    assert (
        sample(metrics, "kvstore_request_duration_seconds_bucket", operation="get", le="0.001") == 1
    )
    assert (
        sample(metrics, "kvstore_request_duration_seconds_bucket", operation="get", le="0.005") == 2
    )
    assert (
        sample(metrics, "kvstore_request_duration_seconds_bucket", operation="delete", le="0.0005")
        == 1
    )


def test_every_operation_and_outcome_is_exported_from_the_start() -> None:
    """Bound at start-up: a dashboard sees zeros, not absent series, before the first error."""
    metrics = NodeMetrics(Counter())
    for op in OPERATIONS:
        assert sample(metrics, "kvstore_requests_total", operation=op, outcome="timeout") == 0
        assert sample(metrics, "kvstore_request_duration_seconds_count", operation=op) == 0


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (Timeout("late"), "timeout"),
        (Overloaded("full"), "overloaded"),
        (Unavailable("1 of 2"), "unavailable"),
        (StorageUnavailable("disk"), "unavailable"),
        (InvalidKey("empty"), "invalid"),
        (TooManySiblings("many"), "rejected"),
        (KvError("?"), "error"),
        (RuntimeError("bug"), "error"),
        (asyncio.CancelledError(), "cancelled"),
    ],
)
def test_outcome_of(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_batch_sizes() -> None:
    metrics = NodeMetrics(Counter())
    metrics.batch("get_many", 3)
    metrics.batch("get_many", 300)
    assert sample(metrics, "kvstore_batch_items_count", operation="get_many") == 2
    assert sample(metrics, "kvstore_batch_items_sum", operation="get_many") == 303
    assert sample(metrics, "kvstore_batch_items_bucket", operation="get_many", le="5.0") == 1


def test_event_counters_levels_and_storage_are_read_when_scraped() -> None:
    counters: Counter[str] = Counter()
    levels = {"hints_pending": 0.0}
    metrics = NodeMetrics(counters, lambda: levels, lambda: {"live_data_bytes": 4096})
    assert sample(metrics, "kvstore_hints_stored_total") is None  # not counted yet
    counters["hints_stored"] += 3
    counters["storage_fault"] = 1
    counters["bad name!"] += 1  # never exported: not a metric name
    levels["hints_pending"] = 7
    assert sample(metrics, "kvstore_hints_stored_total") == 3
    assert sample(metrics, "kvstore_storage_fault") == 1  # a level: a gauge, no _total
    assert sample(metrics, "kvstore_hints_pending") == 7
    assert sample(metrics, "kvstore_storage_live_data_bytes") == 4096
    counters["hints_stored"] += 1
    assert sample(metrics, "kvstore_hints_stored_total") == 4  # the Status counter itself


def test_storage_stats_come_from_rocksdb(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        stats = storage.stats()
        assert set(stats) >= {"live_data_bytes", "sst_files_bytes", "estimated_keys"}
        assert stats["memtable_bytes"] > 0  # an open RocksDB holds its (empty) memtables
    assert storage.stats() == {}  # closed: nothing to read, and no error


# ---- the endpoint ----


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_endpoint_serves_the_exposition_format() -> None:
    async def scenario() -> list[bytes]:
        counters: Counter[str] = Counter(ae_exchanges=5)
        metrics = NodeMetrics(counters)
        metrics.record("get", None, 0.002)
        server = MetricsServer(metrics.registry)
        await server.start("127.0.0.1:0")
        try:
            return [
                await _http(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                await _http(server.port, b"GET /secret HTTP/1.1\r\n\r\n"),
                await _http(server.port, b"POST /metrics HTTP/1.1\r\n\r\n"),
                await _http(server.port, b"GET /" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n\r\n"),
            ]
        finally:
            await server.stop()

    ok, missing, post, huge = asyncio.run(scenario())
    head, _, body = ok.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["kvstore_ae_exchanges"].samples[0].value == 5
    got = [
        s
        for s in families["kvstore_requests"].samples
        if s.labels == {"operation": "get", "outcome": "ok"}
    ]
    assert [s.value for s in got if s.name == "kvstore_requests_total"] == [1]
    assert missing.startswith(b"HTTP/1.1 404")
    assert post.startswith(b"HTTP/1.1 405")
    assert huge == b""  # an oversized request head is closed unanswered


# ---- the servicer's instrumentation ----


class _Coordinator:
    def __init__(self, error: KvError | None = None) -> None:
        self.error = error

    async def get(self, key: bytes, r: int, timeout_ms: int, strict: bool) -> GetAnswer:
        if self.error:
            raise self.error
        return GetAnswer((b"v",), b"", True)

    async def put(self, command: PutCommand, hops: int = 0) -> PutAnswer:
        if self.error:
            raise self.error
        return PutAnswer(b"")

    async def forwarded_put(self, forward: Any) -> PutAnswer:
        raise AssertionError("not used")

    async def get_many(
        self, keys: Sequence[bytes], r: int, timeout_ms: int, strict: bool
    ) -> list[GetAnswer | KvError]:
        return [GetAnswer((), b"", False) for _ in keys]

    async def put_many(self, commands: Sequence[PutCommand]) -> list[PutAnswer | KvError]:
        return [PutAnswer(b"") for _ in commands]


class _Aborted(Exception):
    pass


class _Context:
    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    async def abort(self, code: object, details: str) -> None:
        raise _Aborted(details)


def test_servicer_counts_each_request_once_with_its_outcome() -> None:
    metrics = NodeMetrics(Counter())

    async def scenario() -> None:
        context: Any = _Context()
        servicer = KVServicer(_Coordinator(), _Coordinator(), metrics=metrics)  # type: ignore[arg-type]
        await servicer.Get(pb.GetRequest(key=b"k"), context)
        await servicer.Put(pb.PutRequest(key=b"k", value=b"v"), context)
        await servicer.Put(pb.PutRequest(key=b"k", tombstone=True), context)
        await servicer.GetMany(pb.GetManyRequest(keys=[b"a", b"b", b"c"]), context)
        failing = KVServicer(_Coordinator(Timeout("late")), _Coordinator(), metrics=metrics)  # type: ignore[arg-type]
        with pytest.raises(_Aborted):
            await failing.Get(pb.GetRequest(key=b"k"), context)

    asyncio.run(scenario())
    counts = {
        (op, outcome): sample(metrics, "kvstore_requests_total", operation=op, outcome=outcome)
        for op in ("get", "put", "delete", "get_many")
        for outcome in ("ok", "timeout")
    }
    assert counts == {
        ("get", "ok"): 1,
        ("get", "timeout"): 1,
        ("put", "ok"): 1,
        ("put", "timeout"): 0,
        ("delete", "ok"): 1,
        ("delete", "timeout"): 0,
        ("get_many", "ok"): 1,
        ("get_many", "timeout"): 0,
    }
    assert sample(metrics, "kvstore_request_duration_seconds_count", operation="get") == 2
    assert sample(metrics, "kvstore_batch_items_sum", operation="get_many") == 3

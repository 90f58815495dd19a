"""A node's Prometheus metrics: every metric is defined here, in one private registry per node
(several nodes share a process in tests), and the rest of the node reaches it through
`NodeMetrics`' few typed methods.

Two kinds of numbers. Per-request ones (counts by operation and outcome, latency, batch
sizes) are counted as they happen, through children bound once at start-up so the hot path
is one dict lookup, one counter inc and one histogram observe. Everything else is read when
scraped: the node's event counters (the same `Counter[str]` the Status RPC reports, so there
is one source of those numbers), gauges such as hints pending, and RocksDB's own statistics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kvstore.errors import KvError

PREFIX: Final = "kvstore_"
# What a client can ask a node for (a delete is a put of a tombstone, counted on its own).
OPERATIONS: Final = ("get", "put", "delete", "get_many", "put_many")
# How a request ended. A get of a missing key is `ok`: the node answered it.
OUTCOMES: Final = (
    "ok",
    "invalid",
    "unavailable",
    "timeout",
    "overloaded",
    "rejected",
    "denied",
    "cancelled",
    "error",
)
# 0.5 ms .. 10 s: a loopback get is about a millisecond; past 10 s a request has timed out.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
# Items per get_many/put_many: up to the default max_batch_items (1000).
BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# An error's outcome follows its status code (kvstore.errors): every KvError has one, and
# the code is what a client sees too.
_OUTCOME_OF_CODE: Final[Mapping[str, str]] = {
    "DEADLINE_EXCEEDED": "timeout",
    "RESOURCE_EXHAUSTED": "overloaded",
    "UNAVAILABLE": "unavailable",
    "INVALID_ARGUMENT": "invalid",
    "PERMISSION_DENIED": "denied",
    "UNAUTHENTICATED": "denied",
    "FAILED_PRECONDITION": "rejected",
}

# Event counters that are levels, not counts (see node.storagewatch): exported as gauges.
GAUGE_COUNTERS: Final = frozenset({"storage_fault"})

_COUNTER_HELP: Final[Mapping[str, str]] = {
    "hints_stored": "Hints stored here for a primary that missed a write (sloppy quorum).",
    "hints_delivered": "Hints delivered to their primaries.",
    "hints_dropped": "Hints dropped unsent (older than hint_max_age_s).",
    "hints_passed_on": "Hints handed on to another node.",
    "ae_exchanges": "Anti-entropy exchanges (one partition with one peer).",
    "ae_keys_repaired": "Keys repaired by anti-entropy.",
    "ae_segments_repaired": "Merkle segments repaired by anti-entropy.",
    "handoff_keys_moved": "Records moved to their new owners by ownership handoff.",
    "handoff_keys_received": "Records received by ownership handoff.",
    "read_repairs": "Stale replicas repaired after a read.",
    "quorum_failures": "Coordinated requests that did not reach their quorum.",
    "sloppy_writes": "Coordinated writes for which a fallback stood in for a primary.",
    "group_commits": "RocksDB write batches of the group commit.",
    "group_commit_writes": "Writes made durable by the group commit.",
    "requests_refused_overloaded": "Client requests refused at the in-flight bound.",
}


def outcome_of(error: BaseException | None) -> str:
    """The `outcome` label of a request that ended with `error` (None: it succeeded)."""
    if error is None:
        return "ok"
    if isinstance(error, KvError):
        return _OUTCOME_OF_CODE.get(error.code, "error")
    # asyncio.CancelledError: the caller went away or cancelled the call.
    return "cancelled" if type(error).__name__ == "CancelledError" else "error"


class NodeMetrics:
    """The metrics of one node. `counters`: its event counts (read at scrape time);
    `levels`: gauges read at scrape time (hints pending, partitions pending handoff, ...);
    `storage_stats`: RocksDB's statistics, also read at scrape time."""

    def __init__(
        self,
        counters: Counter[str],
        levels: Callable[[], Mapping[str, float]] = dict,
        storage_stats: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        # No `_created` series (a timestamp per child, doubling the output): rates come from
        # the counters themselves. The switch is process-wide; nothing here wants them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped upstream)
        self.registry = CollectorRegistry()
        requests = PromCounter(
            "kvstore_requests",
            "Client requests by operation and outcome.",
            ("operation", "outcome"),
            registry=self.registry,
        )
        latency = Histogram(
            "kvstore_request_duration_seconds",
            "Time from a client request's arrival to its answer, by operation.",
            ("operation",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        batch = Histogram(
            "kvstore_batch_items",
            "Items per get_many / put_many request.",
            ("operation",),
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # Bound once: the hot path never builds a label dict.
        self._requests = {
            (op, outcome): requests.labels(op, outcome) for op in OPERATIONS for outcome in OUTCOMES
        }
        self._latency = {op: latency.labels(op) for op in OPERATIONS}
        self._batch = {op: batch.labels(op) for op in ("get_many", "put_many")}
        self.registry.register(_ScrapeTime(counters, levels, storage_stats))

    def record(self, operation: str, error: BaseException | None, seconds: float) -> None:
        """One client request ended (`error` None: it succeeded) after `seconds`."""
        self._requests[operation, outcome_of(error)].inc()
        self._latency[operation].observe(seconds)

    def batch(self, operation: str, items: int) -> None:
        """A batch request of `items` items arrived."""
        self._batch[operation].observe(items)


class _ScrapeTime(Collector):
    """What is read when scraped rather than counted on the hot path."""

    def __init__(
        self,
        counters: Counter[str],
        levels: Callable[[], Mapping[str, float]],
        storage_stats: Callable[[], Mapping[str, int]],
    ) -> None:
        self._counters = counters
        self._levels = levels
        self._storage_stats = storage_stats

    def collect(self) -> Iterator[Metric]:
        # A copy: the scrape runs on the node's event loop, but a copy keeps the families
        # consistent with each other even if that ever changes.
        for name, value in sorted(dict(self._counters).items()):
            if not _valid_name(name):
                continue
            if name in GAUGE_COUNTERS:
                yield GaugeMetricFamily(PREFIX + name, f"Node level {name}.", value=value)
            else:
                text = _COUNTER_HELP.get(name, f"Node event count {name} (also in Status).")
                yield CounterMetricFamily(PREFIX + name, text, value=value)
        for name, level in sorted(self._levels().items()):
            yield GaugeMetricFamily(PREFIX + name, _LEVEL_HELP.get(name, name), value=level)
        for name, stat in sorted(self._storage_stats().items()):
            yield GaugeMetricFamily(
                PREFIX + "storage_" + name, _STORAGE_HELP.get(name, name), value=stat
            )


_LEVEL_HELP: Final[Mapping[str, str]] = {
    "hints_pending": "Hints held here, waiting for their primaries.",
    "hint_bytes": "Bytes of the hints held here.",
    "handoff_partitions_pending": "Partitions this node still has to pull from their old owners.",
}

_STORAGE_HELP: Final[Mapping[str, str]] = {
    "live_data_bytes": "RocksDB's estimate of live data bytes (rocksdb.estimate-live-data-size).",
    "sst_files_bytes": "Bytes of RocksDB's SST files (rocksdb.total-sst-files-size).",
    "memtable_bytes": "Bytes of RocksDB's memtables (rocksdb.cur-size-all-mem-tables).",
    "estimated_keys": "RocksDB's estimate of keys (rocksdb.estimate-num-keys).",
    "pending_compaction_bytes": "Bytes RocksDB estimates compaction has yet to rewrite.",
}


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c == "_") for c in name)

"""`kvstore top`: live rates of a few nodes, from two scrapes of their metrics endpoints.

Everything here but `scrape` and `run` is pure: a scrape's text becomes a `Snapshot`, two
snapshots of a node become a `Row` of rates, rows become a table."""

from __future__ import annotations

import math
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

OPERATIONS = ("get", "put", "delete", "get_many", "put_many")
# The local cluster's nodes (`kvstore local`): cluster ports 7101.. plus metrics' 2000.
DEFAULT_NODES = ("127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103")
# A scrape's answer is a few tens of KiB; more is not a kvstore node.
MAX_SCRAPE_BYTES = 4 * 1024 * 1024
SCRAPE_TIMEOUT_S = 2.0
# --count's ceiling, and --interval's range in seconds.
MAX_COUNT = 1_000_000
INTERVALS = (0.1, 3600.0)


class ScrapeError(Exception):
    """A node's endpoint did not answer with metrics."""


@dataclass(frozen=True)
class Snapshot:
    """One scrape of one node: the numbers `top` needs from it."""

    # (operation, outcome) -> requests so far.
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    # operation -> [(upper bound in seconds, cumulative count)], by bound.
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    hints_pending: float = 0.0
    storage_bytes: float = 0.0


def parse(text: str) -> Snapshot:
    """A Prometheus exposition text (a node's /metrics) as a Snapshot. Unknown metrics are
    ignored; a malformed text raises ValueError (the parser's)."""
    snapshot = Snapshot()
    storage = 0.0
    hints = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "kvstore_requests_total":
                key = (s.labels.get("operation", ""), s.labels.get("outcome", ""))
                snapshot.requests[key] = s.value
            elif s.name == "kvstore_request_duration_seconds_bucket":
                bound = float(s.labels["le"])
                snapshot.buckets.setdefault(s.labels["operation"], []).append((bound, s.value))
            elif s.name == "kvstore_hints_pending":
                hints = s.value
            elif s.name in ("kvstore_storage_sst_files_bytes", "kvstore_storage_memtable_bytes"):
                storage += s.value
    for series in snapshot.buckets.values():
        series.sort()
    return Snapshot(snapshot.requests, snapshot.buckets, hints, storage)


def _increase(before: float, after: float) -> float:
    """A counter's increase; a counter lower than before was reset (the node restarted)."""
    return after - before if after >= before else after


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative buckets [(upper bound, count)], interpolated linearly
    within its bucket as Prometheus' histogram_quantile does; None with no observations.
    In the +Inf bucket: the largest finite bound (all that is known)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = (bound if not math.isinf(bound) else lower), count
    return lower


@dataclass(frozen=True)
class Row:
    node: str
    ops: dict[str, float]  # operation -> requests per second
    errors: float  # failed requests per second
    p50: float | None  # seconds, over every operation
    p99: float | None
    hints_pending: float
    storage_bytes: float

    @property
    def total(self) -> float:
        return sum(self.ops.values())


def rates(node: str, before: Snapshot, after: Snapshot, seconds: float) -> Row:
    """What happened on `node` between two of its snapshots `seconds` apart."""
    if seconds <= 0:
        raise ValueError("snapshots must be apart in time")
    ops = dict.fromkeys(OPERATIONS, 0.0)
    errors = 0.0
    for key, count in after.requests.items():
        done = _increase(before.requests.get(key, 0.0), count)
        operation, outcome = key
        ops[operation] = ops.get(operation, 0.0) + done / seconds
        if outcome != "ok":
            errors += done / seconds
    # Every operation's bucket increases added up: one latency distribution of the node.
    merged: dict[float, float] = {}
    for operation, series in after.buckets.items():
        earlier = dict(before.buckets.get(operation, []))
        for bound, count in series:
            merged[bound] = merged.get(bound, 0.0) + _increase(earlier.get(bound, 0.0), count)
    deltas = sorted(merged.items())
    return Row(
        node,
        ops,
        errors,
        quantile(0.5, deltas),
        quantile(0.99, deltas),
        after.hints_pending,
        after.storage_bytes,
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


_HEAD = ("node", "ops/s", *OPERATIONS, "err/s", "err%", "p50 ms", "p99 ms", "hints", "storage")


def render(rows: Sequence[Row | tuple[str, str]], now: datetime | None = None) -> str:
    """A table of rows; a (node, reason) pair is a node that could not be scraped."""
    table: list[tuple[str, ...]] = [_HEAD]
    down: list[str] = []
    for row in rows:
        if isinstance(row, tuple):
            down.append(f"{row[0]}  down: {row[1]}")
            continue
        share = 100 * row.errors / row.total if row.total else 0.0
        table.append(
            (
                row.node,
                f"{row.total:.0f}",
                *(f"{row.ops.get(op, 0.0):.0f}" for op in OPERATIONS),
                f"{row.errors:.1f}",
                f"{share:.1f}",
                _ms(row.p50),
                _ms(row.p99),
                f"{row.hints_pending:.0f}",
                _size(row.storage_bytes),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(_HEAD))]
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = [stamp]
    out += (
        "  ".join(f"{cell:>{w}}" for cell, w in zip(line, widths, strict=True)) for line in table
    )
    return "\n".join(out + down)


def scrape(address: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> str:
    """The text of http://ADDRESS/metrics."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout_s) as answer:
            body: bytes = answer.read(MAX_SCRAPE_BYTES + 1)
    except OSError as exc:
        raise ScrapeError(str(getattr(exc, "reason", exc))) from exc
    if len(body) > MAX_SCRAPE_BYTES:
        raise ScrapeError(f"answer larger than {MAX_SCRAPE_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def _snapshots(nodes: Sequence[str], fetch: Callable[[str], str]) -> dict[str, Snapshot | str]:
    taken: dict[str, Snapshot | str] = {}
    for node in nodes:
        try:
            taken[node] = parse(fetch(node))
        except (ScrapeError, ValueError) as exc:
            taken[node] = str(exc) or type(exc).__name__
    return taken


def run(
    nodes: Sequence[str],
    interval_s: float,
    count: int,
    out: TextIO = sys.stdout,
    fetch: Callable[[str], str] = scrape,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print `count` tables (0: until interrupted), one every `interval_s`. Exit status 1
    when no node answered the last scrape."""
    previous, at = _snapshots(nodes, fetch), clock()
    printed = 0
    answered = any(isinstance(s, Snapshot) for s in previous.values())
    while count == 0 or printed < count:
        sleep(interval_s)
        current, now = _snapshots(nodes, fetch), clock()
        rows: list[Row | tuple[str, str]] = []
        for node in nodes:
            before, after = previous[node], current[node]
            if isinstance(after, str):
                rows.append((node, after))
            elif isinstance(before, str):
                rows.append((node, "(first answer: rates next time)"))
            else:
                rows.append(rates(node, before, after, max(now - at, 1e-9)))
        print(render(rows), file=out, flush=True)
        printed += 1
        previous, at = current, now
        answered = any(isinstance(s, Snapshot) for s in current.values())
    return 0 if answered else 1

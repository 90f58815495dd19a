"""Turning phase results into the YCSB-style text summary, JSON and CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping

from kvstore.bench.runner import PhaseResult

CSV_FIELDS = (
    "store", "workload", "phase", "op", "count", "throughput", "mean_ms", "p50_ms",
    "p95_ms", "p99_ms", "p999_ms", "max_ms", "errors",
)  # fmt: skip


def as_dict(result: PhaseResult, config: Mapping[str, object]) -> dict[str, object]:
    """The JSON document of one phase; `config` says what was run (store, workload, shape)."""
    return {
        "config": dict(config),
        "elapsed_s": result.elapsed,
        "completed": result.completed,
        "throughput": result.throughput,
        "operations": {
            op: dataclasses.asdict(result.latencies.summary(op))
            for op in result.latencies.operations
        },
        "errors": dict(result.errors),
        "clipped_latencies": result.latencies.clipped,
        "per_second": [
            result.per_second.get(s, 0) for s in range(max(result.per_second, default=-1) + 1)
        ],
    }


def to_json(result: PhaseResult, config: Mapping[str, object]) -> str:
    return json.dumps(as_dict(result, config), indent=2, sort_keys=True)


def to_csv(result: PhaseResult, config: Mapping[str, object]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    errors = sum(result.errors.values())
    for op in result.latencies.operations:
        s = result.latencies.summary(op)
        writer.writerow(
            {
                "store": config.get("store"),
                "workload": config.get("workload"),
                "phase": config.get("phase"),
                "op": op,
                "count": s.count,
                "throughput": f"{result.throughput:.1f}",
                "mean_ms": f"{s.mean_ms:.3f}",
                "p50_ms": f"{s.p50_ms:.3f}",
                "p95_ms": f"{s.p95_ms:.3f}",
                "p99_ms": f"{s.p99_ms:.3f}",
                "p999_ms": f"{s.p999_ms:.3f}",
                "max_ms": f"{s.max_ms:.3f}",
                "errors": errors,
            }
        )
    return out.getvalue()


def ycsb_text(result: PhaseResult) -> str:
    """The summary in YCSB's own format, so existing tooling and eyes can read it."""
    lines = [
        f"[OVERALL], RunTime(ms), {result.elapsed * 1000:.0f}",
        f"[OVERALL], Throughput(ops/sec), {result.throughput:.1f}",
    ]
    for op in result.latencies.operations:
        s = result.latencies.summary(op)
        tag = f"[{op.upper()}]"
        lines += [
            f"{tag}, Operations, {s.count}",
            f"{tag}, AverageLatency(us), {s.mean_ms * 1000:.1f}",
            f"{tag}, 50thPercentileLatency(us), {s.p50_ms * 1000:.0f}",
            f"{tag}, 95thPercentileLatency(us), {s.p95_ms * 1000:.0f}",
            f"{tag}, 99thPercentileLatency(us), {s.p99_ms * 1000:.0f}",
            f"{tag}, 99.9PercentileLatency(us), {s.p999_ms * 1000:.0f}",
            f"{tag}, MaxLatency(us), {s.max_ms * 1000:.0f}",
        ]
    for kind, count in sorted(result.errors.items()):
        lines.append(f"[ERRORS], {kind}, {count}")
    return "\n".join(lines)

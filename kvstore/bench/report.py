"""Turning phase results into the YCSB-style text summary, JSON and CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kvstore.bench.runner import PhaseResult

CSV_FIELDS = (
    "store", "workload", "phase", "target_rate", "op", "count", "throughput", "mean_ms",
    "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "not_found", "errors",
    "client_cpu_us_per_op",
)  # fmt: skip

# One run of a phase: what was asked (store, workload, shape) and what it measured.
Run = tuple[Mapping[str, object], PhaseResult]


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
        "latency_curve": {op: result.latencies.curve(op) for op in result.latencies.operations},
        "errors": dict(result.errors),
        # Per operation, of its completed count: reads that found no value (YCSB NOT_FOUND).
        "not_found": {op: result.not_found.get(op, 0) for op in result.latencies.operations},
        "clipped_latencies": result.latencies.clipped,
        "per_second": [
            result.per_second.get(s, 0) for s in range(max(result.per_second, default=-1) + 1)
        ],
        "cpu_s": dict(result.cpu_s),
        "cpu_us_per_op": result.cpu_us_per_op(),
    }


def to_json(runs: Sequence[Run]) -> str:
    """One run as its document; a rate sweep as {"sweep": [document per target rate]}."""
    documents = [as_dict(result, config) for config, result in runs]
    body: object = documents[0] if len(documents) == 1 else {"sweep": documents}
    return json.dumps(body, indent=2, sort_keys=True)


def to_csv(runs: Sequence[Run]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for config, result in runs:
        errors = sum(result.errors.values())
        client_cpu = result.cpu_us_per_op().get("client")
        for op in result.latencies.operations:
            s = result.latencies.summary(op)
            writer.writerow(
                {
                    "store": config.get("store"),
                    "workload": config.get("workload"),
                    "phase": config.get("phase"),
                    "target_rate": config.get("target_rate") or "",
                    "op": op,
                    "count": s.count,
                    "throughput": f"{result.throughput:.1f}",
                    "mean_ms": f"{s.mean_ms:.3f}",
                    "p50_ms": f"{s.p50_ms:.3f}",
                    "p95_ms": f"{s.p95_ms:.3f}",
                    "p99_ms": f"{s.p99_ms:.3f}",
                    "p999_ms": f"{s.p999_ms:.3f}",
                    "max_ms": f"{s.max_ms:.3f}",
                    "not_found": result.not_found.get(op, 0),
                    "errors": errors,
                    "client_cpu_us_per_op": "" if client_cpu is None else f"{client_cpu:.1f}",
                }
            )
    return out.getvalue()


def ycsb_text(result: PhaseResult) -> str:
    """The summary in YCSB's own format, so existing tooling and eyes can read it (return
    codes as YCSB prints them: OK, and NOT_FOUND when a read found no value); CPU per
    operation of each measured process follows under [CPU]."""
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
            f"{tag}, Return=OK, {s.count - result.not_found.get(op, 0)}",
        ]
        if result.not_found.get(op):
            lines.append(f"{tag}, Return=NOT_FOUND, {result.not_found[op]}")
    for name, micros in result.cpu_us_per_op().items():
        lines.append(f"[CPU], {name}(us/op), {micros:.1f}")
    for kind, count in sorted(result.errors.items()):
        lines.append(f"[ERRORS], {kind}, {count}")
    return "\n".join(lines)


def sweep_table(documents: Sequence[Mapping[str, Any]]) -> str:
    """The latency-at-load curve as a Markdown table, one row per document (`as_dict` form,
    as written to --json), so the CLI and bench/compare print the same rows."""
    lines = [
        "| store | target/s | achieved/s | op: p50 / p99 ms | errors | clipped |",
        "|---|---|---|---|---|---|",
    ]
    for document in documents:
        config = document["config"]
        latency = "; ".join(
            f"{op}: {s['p50_ms']:.1f} / {s['p99_ms']:.1f}"
            for op, s in sorted(document["operations"].items())
        )
        lines.append(
            f"| {config.get('store')} | {config.get('target_rate') or 0:.0f} |"
            f" {document['throughput']:.0f} | {latency} | {sum(document['errors'].values())} |"
            f" {document['clipped_latencies']} |"
        )
    return "\n".join(lines)

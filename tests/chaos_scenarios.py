"""The fault scenarios both chaos tiers run (local processes and docker containers), and
what each must show: nothing acknowledged lost, and every key's primaries identical within
CONVERGE_WITHIN_S of the heal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvstore.chaos.runner import Scenario

# Faster timers than the defaults (gossip 1 s): failures noticed in ~2 s, anti-entropy
# walking 64 partitions quickly. The mechanisms are the defaults'.
PARTITIONS = 64
FAST_SETTINGS = {
    "partitions": PARTITIONS,
    "gossip_interval_ms": 200,
    "replica_timeout_ms": 300,
    "hint_interval_ms": 200,
    "handoff_interval_ms": 300,
    "anti_entropy_interval_ms": 50,
}
CONVERGE_WITHIN_S = 60.0

_COMMON: dict[str, Any] = {
    "workload": "unique,hot,ryw,chain",
    "processes": 10,
    "rate_per_s": 10.0,
    "converge_timeout_s": CONVERGE_WITHIN_S,
    "lead_s": 2.0,
}

SCENARIOS = {
    # One node cut off from the others for 20 s; its clients keep writing to it.
    "isolate": Scenario(nemesis="isolate", duration_s=24, fault_s=20, calm_s=2, **_COMMON),
    # 2|3 with writers on both sides (process p talks to node p % 5).
    "split": Scenario(nemesis="split", duration_s=24, fault_s=20, calm_s=2, **_COMMON),
    # kill -9 a different node every 10 s: down 7 s, back 3 s, next.
    "rotating-kill": Scenario(nemesis="kill", duration_s=32, fault_s=7, calm_s=3, **_COMMON),
    # A node frozen (SIGSTOP / docker pause) for 15 s.
    "pause": Scenario(nemesis="pause", duration_s=19, fault_s=15, calm_s=2, **_COMMON),
}


def cli_args(settings: dict[str, int]) -> tuple[str, ...]:
    return tuple(
        item for name, value in settings.items()
        for item in (f"--{name.replace('_', '-')}", str(value))
    )  # fmt: skip


def assert_sound(report: dict[str, Any], out_dir: Path, name: str) -> None:
    """Save the report (for the note's figures), then hold it to the scenario's promise."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{report['backend']}-{name}.json").write_text(json.dumps(report, indent=2))
    figures = report["figures"]
    summary = (
        f"{name}: {figures['ops']} ops, {figures['acknowledged_writes']} acknowledged,"
        f" {figures['lost_writes']} lost, converged in {figures['converge_s']} s;"
        f" violations {report['violation_counts']}: {report['violations'][:3]}"
    )
    print(summary)
    assert figures["acknowledged_writes"] > 0, summary
    # The fault must have been made: a nemesis that did nothing would otherwise pass every
    # check. (Its cost is no proof: a ring-aware client routes around a dead node, so a kill
    # may fail no write at all.)
    nemesis = report["scenario"]["nemesis"]
    made = [
        e["event"]
        for e in report["timeline"]
        if e["event"].startswith(f"{nemesis}: ")
        and any(word in e["event"] for word in ("killed", "paused", "cut"))
    ]
    assert made, f"{summary}; timeline {report['timeline']}"
    assert figures["lost_writes"] == 0, summary
    assert figures["converge_s"] is not None, summary
    assert report["valid"], summary

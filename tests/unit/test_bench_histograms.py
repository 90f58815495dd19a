"""Latency histograms: percentiles, clipping, and merging what several processes recorded."""

from __future__ import annotations

import json
import multiprocessing
import random

from kvstore.bench.histograms import HIGHEST_US, LatencyRecorder


def record_in_child(seed: int) -> str:
    """Runs in a separate process: records its own latencies and sends them back encoded."""
    rng = random.Random(seed)
    recorder = LatencyRecorder()
    for _ in range(20_000):
        recorder.record("read", rng.expovariate(1 / 0.002))
        recorder.record("update", rng.expovariate(1 / 0.005))
    return json.dumps(recorder.encode())


def test_percentiles_of_a_known_distribution() -> None:
    recorder = LatencyRecorder()
    for ms in range(1, 1001):  # 1..1000 ms, one each
        recorder.record("read", ms / 1000)
    summary = recorder.summary("read")
    assert summary.count == 1000
    assert abs(summary.p50_ms - 500) <= 1 and abs(summary.p99_ms - 990) <= 1
    assert abs(summary.p999_ms - 999) <= 1 and abs(summary.max_ms - 1000) <= 1
    assert abs(summary.mean_ms - 500.5) < 1
    assert recorder.summary("update").count == 0


def test_latencies_past_the_ceiling_are_clipped_and_counted() -> None:
    recorder = LatencyRecorder()
    recorder.record("read", 3600.0)
    assert recorder.clipped == 1 and recorder.count("read") == 1
    assert recorder.summary("read").max_ms >= HIGHEST_US / 1e3 * 0.999


def test_merge_across_processes_equals_recording_in_one() -> None:
    seeds = [1, 2, 3]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        encoded = pool.map(record_in_child, seeds)
    merged = LatencyRecorder()
    for data in encoded:
        merged.merge(LatencyRecorder.decode(json.loads(data)))

    in_one = LatencyRecorder()
    for seed in seeds:
        in_one.merge(LatencyRecorder.decode(json.loads(record_in_child(seed))))
    direct = LatencyRecorder()
    for seed in seeds:
        rng = random.Random(seed)
        for _ in range(20_000):
            direct.record("read", rng.expovariate(1 / 0.002))
            direct.record("update", rng.expovariate(1 / 0.005))

    assert merged.operations == ["read", "update"]
    for op in merged.operations:
        assert merged.summary(op) == in_one.summary(op) == direct.summary(op)
        assert merged.count(op) == 60_000
    # Sanity of the merged figures: exponential with mean 2 ms has p50 = ln 2 * 2 ms.
    assert abs(merged.summary("read").p50_ms - 1.386) < 0.05

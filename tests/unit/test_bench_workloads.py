"""kvbench's workload generators: proportions, skew, recency, reproducibility."""

from __future__ import annotations

import collections
import random

import pytest

from kvstore.bench.generators import (
    InsertCounter,
    Latest,
    ScrambledZipfian,
    Uniform,
    Zipfian,
    fnv1a_64,
    zeta,
)
from kvstore.bench.workloads import (
    CORE_WORKLOADS,
    Op,
    OperationChooser,
    UnsupportedWorkload,
    check_supported,
    custom_workload,
)

DRAWS = 100_000


@pytest.mark.parametrize("name", sorted(CORE_WORKLOADS))
def test_core_workload_proportions_hold_over_100k_draws(name: str) -> None:
    workload = CORE_WORKLOADS[name]
    chooser = OperationChooser(workload, 10_000, random.Random(5))
    counts = collections.Counter(chooser.next_op() for _ in range(DRAWS))
    for op, proportion in workload.mix.items():
        assert abs(counts[op] / DRAWS - proportion) < 0.01, (name, op, counts)
    assert set(counts) == set(workload.mix)


def test_standard_ycsb_proportions() -> None:
    w = CORE_WORKLOADS
    assert w["a"].mix == {Op.READ: 0.5, Op.UPDATE: 0.5}
    assert w["b"].mix == {Op.READ: 0.95, Op.UPDATE: 0.05}
    assert w["c"].mix == {Op.READ: 1.0}
    assert w["d"].mix == {Op.READ: 0.95, Op.INSERT: 0.05} and w["d"].distribution == "latest"
    assert w["e"].mix == {Op.SCAN: 0.95, Op.INSERT: 0.05}
    assert w["f"].mix == {Op.READ: 0.5, Op.READ_MODIFY_WRITE: 0.5}


def test_custom_mix_and_bad_mixes() -> None:
    mix = custom_workload({"read": 0.9, "update": 0.1, "insert": 0})
    assert mix.mix == {Op.READ: 0.9, Op.UPDATE: 0.1}
    chooser = OperationChooser(mix, 100, random.Random(1))
    counts = collections.Counter(chooser.next_op() for _ in range(DRAWS))
    assert abs(counts[Op.READ] / DRAWS - 0.9) < 0.01
    with pytest.raises(ValueError):
        custom_workload({"read": 0.5, "update": 0.2})  # does not add up to 1
    with pytest.raises(ValueError):
        custom_workload({"read": 1.5, "update": -0.5})
    with pytest.raises(ValueError):
        custom_workload({"delete": 1.0})  # no such operation


def test_scan_workload_is_refused_with_a_clear_message() -> None:
    supported = frozenset({Op.READ, Op.UPDATE, Op.INSERT, Op.READ_MODIFY_WRITE})
    for name in "abcdf":
        check_supported(CORE_WORKLOADS[name], supported)
    with pytest.raises(UnsupportedWorkload, match="scan"):
        check_supported(CORE_WORKLOADS["e"], supported)


def test_zipfian_is_skewed_like_theory() -> None:
    rng = random.Random(3)
    items = 1000
    zipf = Zipfian(items)
    counts = collections.Counter(zipf.next(rng) for _ in range(DRAWS))
    expected_top = 1 / zeta(items, 0.99)  # P(item 0) = 1/zeta(n)
    assert abs(counts[0] / DRAWS - expected_top) < 0.015
    assert counts[0] > counts[1] > counts[5] > counts[50]
    assert all(0 <= k < items for k in counts)
    # The hottest 1% of items draw far more than 1% of requests (uniform would be ~1%).
    hottest = sum(c for _, c in counts.most_common(items // 100))
    assert hottest / DRAWS > 0.3


def test_scrambled_zipfian_spreads_the_hot_keys_but_keeps_the_skew() -> None:
    rng = random.Random(4)
    chooser = ScrambledZipfian(10_000)
    counts = collections.Counter(chooser.next(rng) for _ in range(DRAWS))
    top = [k for k, _ in counts.most_common(10)]
    assert sum(counts[k] for k in top) / DRAWS > 0.08  # skewed: uniform gives ~0.001
    assert top != sorted(top) or max(top) > 1000  # not simply the lowest key numbers
    assert all(0 <= k < 10_000 for k in counts)
    uniform = collections.Counter(Uniform(10_000).next(rng) for _ in range(DRAWS))
    assert sum(c for _, c in uniform.most_common(10)) / DRAWS < 0.01


def test_latest_favours_the_newest_keys_and_follows_inserts() -> None:
    rng = random.Random(6)
    inserted = InsertCounter(1000)
    latest = Latest(inserted)
    counts = collections.Counter(latest.next(rng) for _ in range(DRAWS))
    assert counts.most_common(1)[0][0] == 999
    newest_tenth = sum(c for k, c in counts.items() if k >= 900)
    assert newest_tenth / DRAWS > 0.5
    for _ in range(500):
        inserted.take()
    after = collections.Counter(latest.next(rng) for _ in range(DRAWS))
    assert after.most_common(1)[0][0] == 1499
    assert max(after) <= 1499


def test_workload_d_inserts_new_keys_and_reads_recent_ones() -> None:
    chooser = OperationChooser(CORE_WORKLOADS["d"], 1000, random.Random(8))
    draws = [chooser.next() for _ in range(20_000)]
    inserts = [k for op, k in draws if op is Op.INSERT]
    assert inserts == list(range(1000, 1000 + len(inserts)))  # fresh, in order
    reads = [k for op, k in draws if op is Op.READ]
    assert sum(k >= 900 for k in reads) / len(reads) > 0.5


def test_same_seed_same_sequence() -> None:
    def run(seed: int) -> list[tuple[Op, int]]:
        chooser = OperationChooser(CORE_WORKLOADS["a"], 5000, random.Random(seed))
        return [chooser.next() for _ in range(1000)]

    assert run(42) == run(42) != run(43)


def fnv1a_64_bytes(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
    return h


def test_fnv_is_fnv1a_over_the_little_endian_bytes() -> None:
    # The published FNV-1a 64 test vector for "a" anchors the reference implementation.
    assert fnv1a_64_bytes(b"a") == 0xAF63DC4C8601EC8C
    rng = random.Random(9)
    for value in [0, 1, 255, 256, 2**63 - 1, *(rng.randrange(2**63) for _ in range(1000))]:
        h = fnv1a_64_bytes(value.to_bytes(8, "little"))
        signed = h - (1 << 64) if h >= 1 << 63 else h
        assert fnv1a_64(value) == abs(signed)  # YCSB returns Math.abs of a Java long

"""The load loops against an in-memory store: counts, warm-up, errors, and the open loop
charging a stall to every operation that was due during it."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from kvstore.bench import runner
from kvstore.bench.runner import LoadShape, PhaseResult, run_phase
from kvstore.bench.workloads import CORE_WORKLOADS, Op, OperationChooser, custom_workload


class MemoryStore:
    name = "memory"
    supported = frozenset({Op.READ, Op.UPDATE, Op.INSERT, Op.READ_MODIFY_WRITE})

    def __init__(self, service_time: float = 0.0) -> None:
        self.data: dict[str, bytes] = {}
        self.service_time = service_time
        self.stall_once: float = 0.0
        self.calls = 0

    async def _serve(self) -> None:
        self.calls += 1
        if self.stall_once:
            stall, self.stall_once = self.stall_once, 0.0
            await asyncio.sleep(stall)
        await asyncio.sleep(self.service_time)

    async def read(self, key: str) -> None:
        await self._serve()

    async def update(self, key: str, value: bytes) -> None:
        await self._serve()
        self.data[key] = value

    async def insert(self, key: str, value: bytes) -> None:
        await self.update(key, value)

    async def read_modify_write(self, key: str, value: bytes) -> None:
        await self._serve()
        self.data[key] = value

    async def close(self) -> None:
        pass


class FailingStore(MemoryStore):
    async def update(self, key: str, value: bytes) -> None:
        raise TimeoutError("slow")


def chooser(name: str = "a") -> OperationChooser:
    return OperationChooser(CORE_WORKLOADS[name], 1000, random.Random(1))


def test_closed_loop_runs_exactly_the_requested_operations() -> None:
    store = MemoryStore()
    result = asyncio.run(run_phase(store, chooser(), LoadShape(concurrency=8, ops=2000), b"v"))
    assert store.calls == 2000 == result.completed
    counts = {op: result.latencies.count(op) for op in result.latencies.operations}
    assert sum(counts.values()) == 2000 and set(counts) == {"read", "update"}
    assert sum(result.per_second.values()) == 2000 and result.throughput > 0


def test_errors_are_counted_by_kind_not_raised() -> None:
    result = asyncio.run(
        run_phase(FailingStore(), chooser(), LoadShape(concurrency=4, ops=1000), b"v")
    )
    assert result.errors["TimeoutError"] + result.completed == 1000
    assert result.latencies.count("update") == 0 and result.errors["TimeoutError"] > 400


def test_warmup_operations_are_run_but_not_recorded() -> None:
    store = MemoryStore(service_time=0.001)
    shape = LoadShape(concurrency=2, ops=None, duration=0.3, warmup=0.2)
    result = asyncio.run(run_phase(store, chooser("c"), shape, b"v"))
    assert store.calls > result.completed > 0


def test_open_loop_charges_a_stall_to_every_operation_due_during_it() -> None:
    # 500 ops/s for 1 s; the store answers in 1 ms but stalls once for 300 ms early on.
    def run(target_rate: float | None) -> PhaseResult:
        store = MemoryStore(service_time=0.001)
        store.stall_once = 0.3
        shape = LoadShape(concurrency=1, ops=500, target_rate=target_rate)
        return asyncio.run(run_phase(store, chooser("c"), shape, b"v"))

    open_loop = run(500.0).latencies.summary("read")
    closed_loop = run(None).latencies.summary("read")
    # Open loop: ~150 operations were due during the stall, each waited part of it.
    assert open_loop.p50_ms > 20 and open_loop.p95_ms > 150
    # Closed loop hides it in one sample: the median stays at the service time.
    assert closed_loop.p50_ms < 10 and closed_loop.max_ms >= 290
    assert open_loop.count == closed_loop.count == 500


def test_open_loop_keeps_its_schedule() -> None:
    store = MemoryStore()
    shape = LoadShape(concurrency=4, ops=None, duration=0.5, target_rate=400.0)
    result = asyncio.run(run_phase(store, chooser("c"), shape, b"v"))
    assert 180 <= result.completed <= 201  # 400/s for 0.5 s


def test_results_merge_and_round_trip_through_their_encoding() -> None:
    one = asyncio.run(run_phase(MemoryStore(), chooser(), LoadShape(ops=300), b"v"))
    two = asyncio.run(run_phase(FailingStore(), chooser(), LoadShape(ops=300), b"v"))
    merged = PhaseResult.decode(one.encode())
    merged.merge(PhaseResult.decode(two.encode()))
    assert merged.completed == one.completed + two.completed
    assert merged.errors == two.errors
    assert merged.latencies.count("read") == one.latencies.count("read") + two.latencies.count(
        "read"
    )


@pytest.mark.parametrize(
    "shape",
    [LoadShape(ops=None), LoadShape(ops=10, duration=1.0), LoadShape(concurrency=0),
     LoadShape(target_rate=0), LoadShape(warmup=-1), LoadShape(batch=0),
     LoadShape(batch=1001)],
)  # fmt: skip
def test_bad_shapes_are_refused(shape: LoadShape) -> None:
    with pytest.raises(ValueError):
        asyncio.run(run_phase(MemoryStore(), chooser(), shape, b"v"))


def test_custom_mix_runs() -> None:
    mix = custom_workload({"read": 0.5, "rmw": 0.5})
    chosen = OperationChooser(mix, 100, random.Random(2))
    result = asyncio.run(run_phase(MemoryStore(), chosen, LoadShape(ops=400), b"v"))
    assert set(result.latencies.operations) == {"read", "rmw"}


class BatchingStore(MemoryStore):
    def __init__(self, service_time: float = 0.0) -> None:
        super().__init__(service_time)
        self.batches: list[int] = []

    async def batch(self, operations: list[tuple[Op, str]], value: bytes) -> None:
        self.batches.append(len(operations))
        await self._serve()


def test_batches_carry_many_operations_per_request() -> None:
    store = BatchingStore()
    shape = LoadShape(concurrency=2, ops=95, batch=10)
    result = asyncio.run(run_phase(store, chooser(), shape, b"v"))
    assert sorted(store.batches) == [5] + [10] * 9 and result.completed == 95
    assert sum(result.latencies.count(op) for op in result.latencies.operations) == 95


def test_open_loop_batch_latency_runs_from_each_operations_own_due_time() -> None:
    # 100 ops/s in batches of 10: a batch leaves when its last op is due, so its first op has
    # waited 90 ms by then; the median op about 45 ms, though the store answers in 1 ms.
    store = BatchingStore(service_time=0.001)
    shape = LoadShape(concurrency=1, ops=50, target_rate=100.0, batch=10)
    summary = asyncio.run(run_phase(store, chooser("c"), shape, b"v")).latencies.summary("read")
    assert summary.max_ms >= 90 and 30 <= summary.p50_ms <= 70 and summary.count == 50


def test_batches_need_a_store_that_has_them() -> None:
    with pytest.raises(ValueError, match="no batched operations"):
        asyncio.run(run_phase(MemoryStore(), chooser(), LoadShape(batch=2), b"v"))


def test_ops_counts_only_what_is_recorded_after_the_warmup() -> None:
    store = MemoryStore(service_time=0.001)
    shape = LoadShape(concurrency=2, ops=100, warmup=0.1)
    result = asyncio.run(run_phase(store, chooser("c"), shape, b"v"))
    assert result.completed == 100 and store.calls > 120  # ~0.1 s of warm-up ops on top


def test_an_open_loop_that_falls_behind_stops_at_its_hard_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "OPEN_LOOP_OVERRUN_S", 0.2)  # overrun = max(0.2, 0.25 * 1 s)
    store = MemoryStore(service_time=0.05)  # one task: at most 20 ops/s
    shape = LoadShape(concurrency=1, ops=None, duration=1.0, target_rate=200.0)
    began = time.perf_counter()
    result = asyncio.run(run_phase(store, chooser("c"), shape, b"v"))
    assert time.perf_counter() - began < 1.6  # not the 10 s that sending all 200 would take
    # Every one of the 200 operations due is accounted for: answered, or given up on.
    assert result.completed + result.errors[runner.NOT_SENT] == 200
    assert 15 <= result.completed <= 30 and store.calls == result.completed


class HalfLoadedStore(MemoryStore):
    """Holds only the even-numbered keys; a read says whether the key was there."""

    def __init__(self) -> None:
        super().__init__()
        self.misses = 0

    async def read(self, key: str) -> bool:  # type: ignore[override]
        await self._serve()
        found = int(key.removeprefix("user")) % 2 == 0
        self.misses += not found
        return found

    async def read_modify_write(self, key: str, value: bytes) -> bool:  # type: ignore[override]
        found = await self.read(key)
        self.data[key] = value
        return found

    async def batch(self, operations: list[tuple[Op, str]], value: bytes) -> list[bool | Exception]:
        return [await runner.execute(self, op, key, value) for op, key in operations]


class PartlyFailingStore(HalfLoadedStore):
    """A store with per-item batch results: every key ending in 7 fails alone."""

    async def batch(self, operations: list[tuple[Op, str]], value: bytes) -> list[bool | Exception]:
        outcomes: list[bool | Exception] = []
        for op, key in operations:
            if key.endswith("7"):
                outcomes.append(TimeoutError(key))
            else:
                outcomes.append(await runner.execute(self, op, key, value))
        return outcomes


def missing_key_chooser(mix: dict[str, float]) -> OperationChooser:
    # Unscrambled uniform keys 0..99 (key_name formats them as user<number>).
    return OperationChooser(custom_workload(mix, "uniform"), 100, random.Random(3))


def test_reads_of_missing_keys_are_counted_as_not_found_and_still_timed() -> None:
    store = HalfLoadedStore()
    chosen = missing_key_chooser({"read": 0.5, "rmw": 0.3, "update": 0.2})
    result = asyncio.run(run_phase(store, chosen, LoadShape(concurrency=4, ops=1000), b"v"))
    assert result.completed == 1000 and not result.errors  # a miss is not an error
    assert sum(result.not_found.values()) == store.misses
    assert 0 < result.not_found["read"] < result.latencies.count("read")
    assert 0 < result.not_found["rmw"] < result.latencies.count("rmw")
    assert "update" not in result.not_found  # writes have nothing to miss
    # Misses keep their latencies: every completed operation is in a histogram.
    assert sum(result.latencies.count(op) for op in result.latencies.operations) == 1000
    decoded = PhaseResult.decode(result.encode())
    decoded.merge(PhaseResult.decode(result.encode()))
    assert decoded.not_found == result.not_found + result.not_found


def test_batched_reads_of_missing_keys_are_counted_per_operation() -> None:
    store = HalfLoadedStore()
    shape = LoadShape(concurrency=2, ops=400, batch=10)
    result = asyncio.run(run_phase(store, missing_key_chooser({"read": 1.0}), shape, b"v"))
    assert result.not_found["read"] == store.misses and 100 < store.misses < 300


def test_a_batch_item_that_fails_is_counted_alone() -> None:
    store = PartlyFailingStore()
    shape = LoadShape(concurrency=2, ops=400, batch=10)
    result = asyncio.run(run_phase(store, missing_key_chooser({"read": 1.0}), shape, b"v"))
    failed = result.errors["TimeoutError"]
    assert 20 < failed < 80  # about a tenth of the keys end in 7
    assert result.completed == 400 - failed
    assert result.latencies.count("read") == 400 - failed  # a failure has no latency


def test_documents_without_not_found_still_decode() -> None:
    encoded = asyncio.run(run_phase(MemoryStore(), chooser(), LoadShape(ops=10), b"v")).encode()
    del encoded["not_found"]  # as written by a kvbench before the count existed
    assert PhaseResult.decode(encoded).not_found == {}

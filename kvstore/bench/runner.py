"""Driving a store: closed loop (N tasks, each waits for its answer) and open loop (operations
start on a fixed schedule whatever the store does).

In the open loop an operation's latency runs from its *intended* start, not from when a task
got round to sending it: a stalled store then shows up in the latencies of every operation
that was due during the stall, instead of silently slowing the load (coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from kvstore.bench.cpu import CpuProbe
from kvstore.bench.histograms import LatencyRecorder
from kvstore.bench.workloads import Op, OperationChooser, key_name


class Store(Protocol):
    """What kvbench needs of a store; adapters implement it.

    A read (and the read of a read-modify-write) says whether the key held a value: False is
    counted as not_found, YCSB's NOT_FOUND, beside the latency (a miss still took its time)."""

    name: str
    supported: frozenset[Op]

    async def read(self, key: str) -> bool: ...
    async def update(self, key: str, value: bytes) -> None: ...
    async def insert(self, key: str, value: bytes) -> None: ...
    async def read_modify_write(self, key: str, value: bytes) -> bool: ...
    async def close(self) -> None: ...


class BatchStore(Store, Protocol):
    """A store with batched operations: many operations per round trip. Returns, for each
    operation in order, whether its read found the key (True for operations with no read),
    or the error that operation alone failed with (a store with per-item results); an
    error raised fails the whole batch."""

    async def batch(
        self, operations: list[tuple[Op, str]], value: bytes
    ) -> list[bool | Exception]: ...


# How long after the end of an open loop's duration operations still due may be sent.
OPEN_LOOP_OVERRUN_S = 5.0
OPEN_LOOP_OVERRUN_SHARE = 0.25  # ...or this share of the duration, if longer
NOT_SENT = "NotSent"  # the error kind of operations given up at the hard stop


@dataclass(frozen=True)
class LoadShape:
    concurrency: int = 16
    ops: int | None = 10_000  # stop after this many operations...
    duration: float | None = None  # ...or after this many seconds (one of the two)
    warmup: float = 0.0  # seconds whose operations are run but not recorded
    target_rate: float | None = None  # ops/s for an open loop; None = closed loop
    batch: int = 1  # operations per request, for stores with batched operations

    def check(self) -> None:
        if not 1 <= self.concurrency <= 10_000:
            raise ValueError("concurrency must be in 1..10,000")
        if (self.ops is None) == (self.duration is None):
            raise ValueError("give exactly one of ops and duration")
        if self.ops is not None and not 1 <= self.ops <= 100_000_000:
            raise ValueError("ops must be in 1..100,000,000")
        if self.duration is not None and not 0 < self.duration <= 24 * 3600:
            raise ValueError("duration must be in (0, 86400] seconds")
        if self.warmup < 0:
            raise ValueError("warmup must not be negative")
        if self.target_rate is not None and not 0 < self.target_rate <= 10_000_000:
            raise ValueError("target rate must be in (0, 10,000,000] ops/s")
        if not 1 <= self.batch <= 1000:
            raise ValueError("batch must be in 1..1,000 operations")


@dataclass
class PhaseResult:
    latencies: LatencyRecorder = field(default_factory=LatencyRecorder)
    errors: Counter[str] = field(default_factory=Counter)
    # Operations answered with "no such key", by operation: completed (their latencies are
    # recorded) but not successes, as YCSB's NOT_FOUND return code.
    not_found: Counter[str] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)  # completed ops by second
    elapsed: float = 0.0
    completed: int = 0
    # CPU seconds used while recording, by process: "client" (summed over client processes)
    # and any server processes the run was told to watch.
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def cpu_us_per_op(self) -> dict[str, float]:
        if not self.completed:
            return {}
        return {name: s * 1e6 / self.completed for name, s in sorted(self.cpu_s.items())}

    def merge(self, other: PhaseResult) -> None:
        """Combine results of client processes that ran side by side."""
        self.latencies.merge(other.latencies)
        self.errors.update(other.errors)
        self.not_found.update(other.not_found)
        self.per_second.update(other.per_second)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.completed += other.completed
        for name, seconds in other.cpu_s.items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + seconds

    def encode(self) -> dict[str, object]:
        return {
            "latencies": self.latencies.encode(),
            "errors": dict(self.errors),
            "not_found": dict(self.not_found),
            "per_second": {str(k): v for k, v in self.per_second.items()},
            "elapsed": self.elapsed,
            "completed": self.completed,
            "cpu_s": dict(self.cpu_s),
        }

    @classmethod
    def decode(cls, data: dict[str, object]) -> PhaseResult:
        latencies = data["latencies"]
        errors = data["errors"]
        per_second = data["per_second"]
        assert isinstance(latencies, dict) and isinstance(errors, dict)
        cpu = data.get("cpu_s", {})
        not_found = data.get("not_found", {})  # absent from documents of older kvbench
        assert isinstance(per_second, dict) and isinstance(cpu, dict)
        assert isinstance(not_found, dict)
        return cls(
            latencies=LatencyRecorder.decode(latencies),
            errors=Counter({str(k): int(v) for k, v in errors.items()}),
            not_found=Counter({str(k): int(v) for k, v in not_found.items()}),
            per_second=Counter({int(k): int(v) for k, v in per_second.items()}),
            elapsed=float(str(data["elapsed"])),
            completed=int(str(data["completed"])),
            cpu_s={str(k): float(v) for k, v in cpu.items()},
        )


def make_value(size: int) -> bytes:
    return os.urandom(size)


async def execute(store: Store, op: Op, key: str, value: bytes) -> bool:
    """Run one operation; False when its read found no value for the key."""
    if op is Op.READ:
        return await store.read(key) is not False
    if op is Op.UPDATE:
        await store.update(key, value)
        return True
    if op is Op.INSERT:
        await store.insert(key, value)
        return True
    if op is Op.READ_MODIFY_WRITE:
        return await store.read_modify_write(key, value) is not False
    raise ValueError(f"{store.name} cannot run {op.value}")


async def run_phase(
    store: Store,
    chooser: OperationChooser,
    shape: LoadShape,
    value: bytes,
    progress: Callable[[PhaseResult], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cpu: CpuProbe | None = None,
    on_interval: Callable[[PhaseResult, float], None] | None = None,
    interval_s: float = 10.0,
) -> PhaseResult:
    """Run one phase of a workload against `store` and measure it (latencies, throughput,
    and the CPU `cpu` sees used from the end of the warm-up to the end of the phase).
    `on_interval(result, elapsed)`: called every `interval_s` of the recorded part and once
    at its end, with `result.latencies.take_interval()` holding that interval's latencies."""
    shape.check()
    if on_interval is not None and not interval_s > 0:
        raise ValueError("the reporting interval must be positive")
    if shape.batch > 1 and not callable(getattr(store, "batch", None)):
        raise ValueError(f"{store.name} has no batched operations: --batch needs a store that has")
    cpu = cpu or CpuProbe()
    result = PhaseResult()
    if on_interval is not None:
        result.latencies.track_intervals()
    start = clock()
    cpu_before = cpu.sample()
    record_from = start + shape.warmup
    stop_at = None if shape.duration is None else record_from + shape.duration
    budget = shape.ops  # operations to record: those due after the warm-up
    interval = None if shape.target_rate is None else 1.0 / shape.target_rate
    # An open loop over a duration sends what falls due until stop_at, however late; past
    # hard_stop what is still unsent is given up and counted, so a store slower than the
    # rate cannot stretch a 20 s run into hours.
    hard_stop = None
    if stop_at is not None and interval is not None and shape.duration is not None:
        hard_stop = stop_at + max(OPEN_LOOP_OVERRUN_S, OPEN_LOOP_OVERRUN_SHARE * shape.duration)
    issued = 0  # tickets handed out
    counted = 0  # of those, due after the warm-up
    exhausted = False

    def next_ticket() -> float | None:
        """The next operation's intended start, or None when the run is over."""
        nonlocal issued, counted, exhausted
        if exhausted:
            return None
        intended = clock() if interval is None else start + issued * interval
        if (stop_at is not None and intended >= stop_at) or (
            intended >= record_from and budget is not None and counted >= budget
        ):
            exhausted = True
            return None
        counted += intended >= record_from
        issued += 1
        return intended

    def abandon(held: list[float]) -> None:
        """Past the hard stop: the operations held and every one still due are never sent."""
        nonlocal issued, exhausted
        assert interval is not None and stop_at is not None
        missed = sum(intended >= record_from for intended in held)
        if not exhausted:
            due = math.ceil((stop_at - start) / interval)
            first_recorded = max(math.ceil((record_from - start) / interval), 0)
            missed += max(due - max(issued, first_recorded), 0)
            issued, exhausted = due, True
        if missed:
            result.errors[NOT_SENT] += missed

    async def worker() -> None:
        while True:
            intended_starts: list[float] = []
            while len(intended_starts) < shape.batch and (ticket := next_ticket()) is not None:
                intended_starts.append(ticket)
            if not intended_starts:
                return
            if hard_stop is not None and clock() > hard_stop:
                abandon(intended_starts)
                return
            delay = intended_starts[-1] - clock()  # a batch leaves when its last op is due
            if delay > 0:
                await asyncio.sleep(delay)
            batch = [(op, key_name(number)) for op, number in (chooser.next() for _ in
                                                                 intended_starts)]  # fmt: skip
            found: list[bool | Exception]
            try:
                if len(batch) == 1:
                    found = [await execute(store, *batch[0], value)]
                else:
                    reported = await cast(BatchStore, store).batch(batch, value)
                    # A store that does not say (None) found every key it read.
                    found = [True] * len(batch) if reported is None else reported
            except Exception as exc:  # counted by kind: a benchmark reports errors, not raises
                recorded = sum(intended >= record_from for intended in intended_starts)
                if recorded:
                    result.errors[type(exc).__name__] += recorded
                continue
            done = clock()
            for (op, _), intended, hit in zip(batch, intended_starts, found, strict=True):
                if intended >= record_from and isinstance(hit, Exception):
                    result.errors[type(hit).__name__] += 1
                elif intended >= record_from:
                    result.latencies.record(op.value, done - intended)
                    result.completed += 1
                    result.per_second[int(done - record_from)] += 1
                    if hit is False:
                        result.not_found[op.value] += 1

    async def report() -> None:
        while progress is not None:
            await asyncio.sleep(1.0)
            result.elapsed = clock() - record_from
            progress(result)

    async def end_of_warmup() -> None:
        nonlocal cpu_before
        await asyncio.sleep(max(record_from - clock(), 0.0))
        cpu_before = cpu.sample()

    async def intervals() -> None:
        assert on_interval is not None
        if shape.warmup:
            await asyncio.sleep(max(record_from - clock(), 0.0))
            result.latencies.take_interval()  # what the warm-up left: not recorded anyway
        # (Without a warm-up nothing is dropped: the workers may have recorded operations
        # before this task first ran.)
        ticks = 1
        while True:
            await asyncio.sleep(max(record_from + ticks * interval_s - clock(), 0.0))
            result.elapsed = clock() - record_from
            on_interval(result, result.elapsed)
            ticks += 1

    reporter = asyncio.ensure_future(report())
    warmed = asyncio.ensure_future(end_of_warmup()) if shape.warmup else None
    ticker = asyncio.ensure_future(intervals()) if on_interval is not None else None
    try:
        await asyncio.gather(*(worker() for _ in range(shape.concurrency)))
    finally:
        reporter.cancel()
        if warmed is not None:
            warmed.cancel()
        if ticker is not None:
            ticker.cancel()
    result.elapsed = max(clock() - record_from, 1e-9)
    result.cpu_s = CpuProbe.used(cpu_before, cpu.sample())
    if on_interval is not None:
        on_interval(result, result.elapsed)  # the last, partial interval
    return result

"""YCSB core workloads A-F and custom mixes: which operation next, on which key."""

from __future__ import annotations

import bisect
import enum
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

from kvstore.bench.generators import InsertCounter, KeyChooser, make_chooser


class Op(enum.Enum):
    READ = "read"
    UPDATE = "update"
    INSERT = "insert"
    SCAN = "scan"
    READ_MODIFY_WRITE = "rmw"


class UnsupportedWorkload(ValueError):
    """The workload needs an operation the store does not have."""


@dataclass(frozen=True)
class Workload:
    name: str
    mix: Mapping[Op, float]
    distribution: str  # uniform | zipfian | latest
    description: str

    def __post_init__(self) -> None:
        if not self.mix or any(p < 0 for p in self.mix.values()):
            raise ValueError("an operation mix needs non-negative proportions")
        total = sum(self.mix.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"operation proportions must add up to 1, got {total:g}")


# The standard proportions of YCSB's core workloads (workloads/workload[a-f] in YCSB).
CORE_WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("a", {Op.READ: 0.5, Op.UPDATE: 0.5}, "zipfian", "update heavy: 50/50 read/update"),
        Workload("b", {Op.READ: 0.95, Op.UPDATE: 0.05}, "zipfian", "read mostly: 95/5 read/update"),
        Workload("c", {Op.READ: 1.0}, "zipfian", "read only"),
        Workload("d", {Op.READ: 0.95, Op.INSERT: 0.05}, "latest", "read latest: 95/5 read/insert"),
        Workload(
            "e", {Op.SCAN: 0.95, Op.INSERT: 0.05}, "zipfian", "short ranges: 95/5 scan/insert"
        ),
        Workload(
            "f", {Op.READ: 0.5, Op.READ_MODIFY_WRITE: 0.5}, "zipfian", "read-modify-write: 50/50"
        ),
    )
}


def custom_workload(proportions: Mapping[str, float], distribution: str = "zipfian") -> Workload:
    """A mix from --read/--update/--insert/--scan/--rmw proportions (zeros may be left out)."""
    mix = {Op(name): p for name, p in proportions.items() if p}
    return Workload("custom", mix, distribution, "custom mix")


def check_supported(workload: Workload, supported: frozenset[Op]) -> None:
    missing = sorted(op.value for op in workload.mix if op not in supported)
    if missing:
        raise UnsupportedWorkload(
            f"workload {workload.name} needs {', '.join(missing)}, which this store does not"
            " support (kvstore has no range scans: it places keys by hash)"
        )


class OperationChooser:
    """Draws (operation, key number) pairs for one workload, reproducibly from a seed."""

    def __init__(
        self,
        workload: Workload,
        records: int,
        rng: random.Random,
        distribution: str | None = None,
        inserted: InsertCounter | None = None,
    ) -> None:
        if records < 1:
            raise ValueError("records must be at least 1")
        self.workload = workload
        self.rng = rng
        self.inserted = inserted or InsertCounter(records)
        self._ops = list(workload.mix)
        self._cumulative = list(itertools.accumulate(workload.mix[op] for op in self._ops))
        self.keys: KeyChooser = make_chooser(
            distribution or workload.distribution, records, self.inserted
        )

    def next_op(self) -> Op:
        index = bisect.bisect_right(self._cumulative, self.rng.random() * self._cumulative[-1])
        return self._ops[min(index, len(self._ops) - 1)]

    def next(self) -> tuple[Op, int]:
        op = self.next_op()
        if op is Op.INSERT:
            return op, self.inserted.take()
        return op, self.keys.next(self.rng)


def key_name(number: int) -> str:
    """YCSB-style key name for a key number (zero-padded, so names sort like numbers)."""
    return f"user{number:012d}"

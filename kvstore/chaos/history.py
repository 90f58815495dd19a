"""The record of every operation a workload ran: what the checkers judge.

One `Op` per client call, written when the call returns: which process (client thread) ran
it against which node, when it was invoked and when it completed, the key, the value it wrote
or the values it read, the causal context it sent and the one it got back, and its outcome:

- `ok`: the store acknowledged it (a write reached W replicas; a read got R answers);
- `fail`: the store refused it before doing anything (a bad argument): it certainly did not
  happen;
- `unknown`: anything else (timeout, too few replicas, the node unreachable mid-call). A
  Dynamo-style write that did not reach W may still have landed on some replica, so an
  unknown write may or may not be present later; checkers demand nothing of it.

Contexts are kept decoded as version vectors (actor -> counter): the checkers compare them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "fail", "unknown"]
Kind = Literal["write", "read"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "fail", "unknown")
Vector = dict[str, int]


@dataclass(frozen=True, slots=True)
class Op:
    process: int
    kind: Kind
    key: str
    node: str  # the node the process sent it to (its coordinator, or the first it tried)
    start_s: float  # seconds since the run began (monotonic clock)
    end_s: float
    outcome: Outcome
    value: str = ""  # a write's value (values are unique text per run)
    values: tuple[str, ...] = ()  # what a read returned
    sent: Vector = field(default_factory=dict)  # the context a write carried
    returned: Vector = field(default_factory=dict)  # the context the store gave back
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["values"] = list(self.values)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        return cls(**{**data, "values": tuple(data.get("values", ()))})


class History:
    """Append-only and thread-safe: every client thread records into one history."""

    def __init__(self, ops: Iterable[Op] = ()) -> None:
        self._ops: list[Op] = list(ops)
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def summary(self) -> dict[str, Any]:
        """Counts by kind and outcome, keys touched, processes: the report's history part."""
        ops = self.ops
        counts = Counter(f"{op.kind}_{op.outcome}" for op in ops)
        return {
            "ops": len(ops),
            **{
                f"{kind}_{outcome}": counts[f"{kind}_{outcome}"]
                for kind in ("write", "read")
                for outcome in OUTCOMES
            },
            "keys": len({op.key for op in ops}),
            "processes": len({op.process for op in ops}),
            "duration_s": round(max((op.end_s for op in ops), default=0.0), 3),
        }

    def to_json(self) -> list[dict[str, Any]]:
        return [op.to_json() for op in self.ops]

    @classmethod
    def from_json(cls, data: Iterable[dict[str, Any]]) -> History:
        return cls(Op.from_json(item) for item in data)

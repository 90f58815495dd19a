"""The record of every operation a workload ran: what the checkers judge.

One `Op` per client call, written when the call returns: which process (client thread) ran
it against which node, when it was invoked and when it completed, the key, the value it wrote,
the values it saw, the causal context it sent and the one it got back, and its outcome:

- `ok`: the store acknowledged it (a write reached W replicas; a read got R answers);
- `fail`: the store refused it before doing anything (a bad argument): it certainly did not
  happen;
- `unknown`: anything else (timeout, too few replicas, the node unreachable mid-call). A
  Dynamo-style write that did not reach W may still have landed on some replica, so an
  unknown write may or may not be present later; checkers demand nothing of it.

`values` is what the process was shown of the key: for a read, the values it returned; for a
write made with return_body, the live values the put returned (its own among them); else ().
The checkers judge by these observations only.

`sent` and `returned` are the contexts as text (`describe_clock`: "a/1:3 b/7:1 -a/1:2", ""
for none), for people reading a report. No checker judges by them: a context that covers a
write proves nothing about what its holder was shown.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Outcome = Literal["ok", "fail", "unknown"]
Kind = Literal["write", "read"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "fail", "unknown")


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
    # What a read returned; what a return_body write returned (else ()). Sorted text.
    values: tuple[str, ...] = ()
    sent: str = ""  # the context a write carried, as text (for people only)
    returned: str = ""  # the context the store gave back, as text (for people only)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["values"] = list(self.values)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        fields = {**data, "values": tuple(data.get("values", ()))}
        # Histories written before contexts were text carried them as vectors.
        for name in ("sent", "returned"):
            if isinstance(fields.get(name), Mapping):
                fields[name] = _vector_text(fields[name])
        return cls(**fields)


def _vector_text(vector: Mapping[str, int]) -> str:
    """A plain vector as describe_clock writes a clock without holes."""
    return " ".join(f"{actor}:{counter}" for actor, counter in sorted(vector.items()) if counter)


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

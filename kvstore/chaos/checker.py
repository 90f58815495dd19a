"""Judging a run: pure functions of the history and of what the key's primaries hold at the
end (read after the faults healed and the cluster settled). No I/O here, so each rule is
tested on hand-made histories that must fail.

The rules:
- **No acknowledged write lost.** Every `ok` write is *accounted for*: its value is among the
  key's final values, or a write that carried a context covering it (so its writer had seen
  it) is itself accounted for. A write may only disappear because a client replaced it
  knowingly; the chain of replacements must end in a value that is there.
- **Replicas converged.** Each key's primaries hold identical versions (the same values and
  the same version vector).
- **Sibling bound.** No read, and no replica at the end, shows more distinct concurrent values
  of a key than the number of processes that wrote it, plus its writes of unknown outcome
  (dotted version vectors promise this). One write applied twice (a coordinator retried a
  forward that timed out but had landed) shows one value twice: counted apart, as
  `keys_with_duplicate_sibling`, a known cost of at-least-once forwarding.
- **Stale reads** are counted, not judged: with sloppy quorums a read may legally miss a write
  its own process made. The rate is: reads that missed the process's last acknowledged write
  of the key, over reads that had one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kvstore.chaos.history import History, Op, Vector


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One primary's own stored versions of a key (live values; tombstones are hidden)."""

    values: tuple[str, ...]
    vector: Vector

    def same_as(self, other: ReplicaState) -> bool:
        return sorted(self.values) == sorted(other.values) and self.vector == other.vector


# key -> primary address -> its state, or None when it could not be read.
FinalStates = Mapping[str, Mapping[str, ReplicaState | None]]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # lost-write, diverged, unreadable, too-many-siblings
    key: str
    detail: str


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.violations

    def to_json(self, max_violations: int = 100) -> dict[str, Any]:
        by_rule: dict[str, int] = defaultdict(int)
        for v in self.violations:
            by_rule[v.rule] += 1
        return {
            "valid": self.valid,
            "violation_counts": dict(by_rule),
            "violations": [asdict(v) for v in self.violations[:max_violations]],
            "figures": self.figures,
        }


def descends(a: Vector, b: Vector) -> bool:
    """Whether vector `a` has seen every event `b` has."""
    return all(a.get(actor, 0) >= counter for actor, counter in b.items())


def final_values(replicas: Mapping[str, ReplicaState | None]) -> set[str]:
    return {value for state in replicas.values() if state is not None for value in state.values}


def lost_writes(history: History, final: FinalStates) -> list[Violation]:
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind == "write":
            writes[op.key].append(op)
    violations = []
    for key, ops in writes.items():
        present = final_values(final.get(key, {}))
        # A write that replaced `op` knowingly carried a context covering op's returned one,
        # so it was sent after op was applied: it started later. Walking from the latest
        # start back, every possible replacer is judged before the writes it could replace.
        accounted_sent: list[Vector] = []
        for op in sorted(ops, key=lambda o: o.start_s, reverse=True):
            replaced = bool(op.returned) and any(descends(s, op.returned) for s in accounted_sent)
            if op.value in present or replaced:
                accounted_sent.append(op.sent)
            elif op.outcome == "ok":
                violations.append(
                    Violation(
                        "lost-write",
                        key,
                        f"value {op.value!r} acknowledged to process {op.process} at"
                        f" {op.end_s:.3f} s is not on any primary and no surviving write"
                        " replaced it knowingly",
                    )
                )
    return violations


def divergence(final: FinalStates) -> list[Violation]:
    violations = []
    for key, replicas in final.items():
        unreadable = sorted(node for node, state in replicas.items() if state is None)
        if unreadable:
            violations.append(Violation("unreadable", key, f"no answer from {unreadable}"))
            continue
        states = list(replicas.items())
        for node, state in states[1:]:
            first_node, first = states[0]
            if state is not None and first is not None and not state.same_as(first):
                violations.append(
                    Violation(
                        "diverged",
                        key,
                        f"{first_node} holds {sorted(first.values)} {first.vector};"
                        f" {node} holds {sorted(state.values)} {state.vector}",
                    )
                )
                break
    return violations


def writers_per_key(history: History, before_s: float | None = None) -> dict[str, int]:
    """The most concurrent writers a key can have had (among writes started before
    `before_s`, if given): the processes that wrote it, plus one per write whose outcome is
    unknown (its process went on without knowing whether it landed, so the next write of
    that process could not replace it)."""
    writers: dict[str, set[int]] = defaultdict(set)
    unknown: dict[str, int] = defaultdict(int)
    for op in history:
        # A refused write did not happen; one started after the read cannot be in it.
        if op.kind != "write" or op.outcome == "fail":
            continue
        if before_s is not None and op.start_s >= before_s:
            continue
        writers[op.key].add(op.process)
        unknown[op.key] += op.outcome == "unknown"
    return {key: len(processes) + unknown[key] for key, processes in writers.items()}


def sibling_bound(history: History, final: FinalStates) -> tuple[list[Violation], int]:
    """Violations, and the most siblings seen anywhere."""
    writes_by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind == "write":
            writes_by_key[op.key].append(op)
    overall = writers_per_key(history)
    violations = []
    most = 0
    seen: list[tuple[str, tuple[str, ...], str, int]] = [
        (
            op.key,
            op.values,
            f"a read by process {op.process} at {op.end_s:.3f} s",
            writers_per_key(History(writes_by_key[op.key]), op.end_s).get(op.key, 0),
        )
        for op in history
        if op.kind == "read" and op.outcome == "ok"
    ]
    for key, replicas in final.items():
        seen.extend(
            (key, state.values, f"{node} at the end", overall.get(key, 0))
            for node, state in replicas.items()
            if state is not None
        )
    for key, values, where, bound in seen:
        most = max(most, len(values))
        # A write applied twice (a forward retried after a timeout: at-least-once) shows as
        # two siblings of one value; counted apart (duplicate_siblings), not as writers.
        if len(set(values)) > bound:
            violations.append(
                Violation(
                    "too-many-siblings",
                    key,
                    f"{where} saw {len(values)} values {list(values)}; at most {bound} writes"
                    " of the key were concurrent",
                )
            )
    return violations, most


def duplicate_siblings(history: History, final: FinalStates) -> dict[str, int]:
    """Reads and final replicas that hold one value twice (values are unique per write)."""
    reads = sum(
        1
        for op in history
        if op.kind == "read" and op.outcome == "ok" and len(set(op.values)) < len(op.values)
    )
    keys = sum(
        1
        for replicas in final.values()
        if any(s is not None and len(set(s.values)) < len(s.values) for s in replicas.values())
    )
    return {"reads_with_duplicate_sibling": reads, "keys_with_duplicate_sibling": keys}


def stale_reads(history: History) -> dict[str, Any]:
    """Reads that missed their own process's last acknowledged write of the key."""
    last_write: dict[tuple[int, str], Op] = {}
    checked = stale = 0
    for op in sorted(history, key=lambda o: o.start_s):
        if op.kind == "write" and op.outcome == "ok":
            previous = last_write.get((op.process, op.key))
            if previous is None or op.end_s > previous.end_s:
                last_write[(op.process, op.key)] = op
        elif op.kind == "read" and op.outcome == "ok":
            mine = last_write.get((op.process, op.key))
            if mine is None or mine.end_s > op.start_s:
                continue
            checked += 1
            if mine.value not in op.values and not descends(op.returned, mine.returned):
                stale += 1
    return {
        "reads_after_own_write": checked,
        "stale_reads": stale,
        "stale_read_rate": round(stale / checked, 6) if checked else 0.0,
    }


def check(history: History, final: FinalStates) -> Verdict:
    """Every rule over one run. `final` must name every key the history wrote."""
    verdict = Verdict()
    verdict.violations += lost_writes(history, final)
    verdict.violations += divergence(final)
    siblings, most = sibling_bound(history, final)
    verdict.violations += siblings
    acknowledged = sum(1 for op in history if op.kind == "write" and op.outcome == "ok")
    lost = sum(1 for v in verdict.violations if v.rule == "lost-write")
    verdict.figures.update(
        acknowledged_writes=acknowledged,
        lost_writes=lost,
        keys_checked=len(final),
        keys_diverged=sum(1 for v in verdict.violations if v.rule in ("diverged", "unreadable")),
        most_siblings=most,
        **duplicate_siblings(history, final),
        **stale_reads(history),
    )
    missing = {op.key for op in history if op.kind == "write"} - set(final)
    for key in sorted(missing):
        verdict.violations.append(Violation("unchecked", key, "the final read did not cover it"))
    return verdict

"""Judging a run: pure functions of the history and of what the key's primaries hold at the
end (read after the faults healed and the cluster settled). No I/O here, so each rule is
tested on hand-made histories that must fail.

The checkers judge by observation: what each process was *shown* of a key, and when. A
process observes a value when an ok read of the key returned it (at the read's end), when an
ok put made with return_body returned it (at the put's end), and when its own write of it was
acknowledged (at that write's end). Contexts are never looked at: a context that covers a
write proves nothing about what its holder was shown (a put context of the old store covered
concurrent siblings its writer had never seen, and a later put with it dropped them).

The rules:
- **No acknowledged write lost.** Every `ok` write d is *accounted for*: its value is among
  the key's final values (on any primary), or a write w of the key by a process that had
  observed d's value at or before w started (w is not d) is itself accounted for. A write may
  only disappear because a process that had been shown it wrote over it; the chain of such
  replacements must end in a value that is there. Writes of unknown or failed outcome are
  never demanded, but account for others only when accounted for themselves.
- **Replicas converged.** Each key's primaries hold identical versions (the same values and
  the same clock, compared as its canonical text).
- **Sibling bound.** No view of a key shows more distinct concurrent values than the number
  of processes that wrote it, plus its writes of unknown outcome (dotted version vectors
  promise this), counting the writes started before the view was taken. The views are ok
  reads, ok return_body puts (their values are the coordinator's siblings after the write)
  and each primary at the end. One write applied twice (a coordinator retried a forward that
  timed out but had landed) shows one value twice: counted apart, as duplicate figures, a
  known cost of at-least-once forwarding.
- **Stale reads** are counted, not judged: with sloppy quorums a read may legally miss a write
  its own process made. A read by process p, started after p's last acknowledged write m of
  the key ended, is stale unless it shows m's value or the value of a write that replaced m
  (transitively) by the observation rule above. The rate is: stale reads over reads that had
  such an m.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kvstore.chaos.history import History, Op


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One primary's own stored versions of a key (live values; tombstones are hidden) and
    its clock as `describe_clock` text (canonical: equal clocks give equal text)."""

    values: tuple[str, ...]
    clock: str

    def same_as(self, other: ReplicaState) -> bool:
        return sorted(self.values) == sorted(other.values) and self.clock == other.clock


# key -> primary address -> its state, or None when it could not be read.
FinalStates = Mapping[str, Mapping[str, ReplicaState | None]]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # lost-write, diverged, unreadable, too-many-siblings, unchecked
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


def final_values(replicas: Mapping[str, ReplicaState | None]) -> set[str]:
    return {value for state in replicas.values() if state is not None for value in state.values}


def observed_values(op: Op) -> tuple[str, ...]:
    """The values of its key that `op` showed its process (when it ended)."""
    if op.outcome != "ok":
        return ()
    if op.kind == "read":
        return op.values
    return (op.value, *op.values)


class _KeyWrites:
    """One key's writes (sorted by start) and who observed which of its values, when."""

    def __init__(self) -> None:
        self.writes: list[Op] = []
        # value -> process -> the earliest time the process was shown it
        self.observed: dict[str, dict[int, float]] = defaultdict(dict)
        # process -> positions in `writes` of its writes, and their starts (both by start)
        self.mine: dict[int, list[int]] = defaultdict(list)
        self.starts: dict[int, list[float]] = defaultdict(list)

    def observe(self, op: Op) -> None:
        for value in observed_values(op):
            seen = self.observed[value]
            if op.end_s < seen.get(op.process, math.inf):
                seen[op.process] = op.end_s

    def finish(self) -> None:
        self.writes.sort(key=lambda o: o.start_s)
        for position, op in enumerate(self.writes):
            self.mine[op.process].append(position)
            self.starts[op.process].append(op.start_s)

    def accounted(self, present: set[str]) -> list[bool]:
        """Which writes are accounted for, by position.

        Latest start first: a replacer starts after its writer observed the write it
        replaces, which is after that write started, so it is judged first. `latest` keeps,
        per process, the latest start of its writes accounted so far: d is accounted when an
        observer of d's value has an accounted write starting at or after it observed it. d
        is not accounted when judged, so it never counts as its own replacer. A hand-made
        history may break the time order (an observation before a write started, equal
        times): another pass over the writes still unaccounted settles those, until nothing
        changes (a real history needs no pass that changes anything after the first).
        """
        accounted = [False] * len(self.writes)
        latest: dict[int, float] = {}
        pending = list(reversed(range(len(self.writes))))
        while pending:
            left = []
            for position in pending:
                op = self.writes[position]
                seen = self.observed.get(op.value, {})
                if op.value in present or any(
                    latest.get(p, -math.inf) >= at for p, at in seen.items()
                ):
                    accounted[position] = True
                    latest[op.process] = max(latest.get(op.process, -math.inf), op.start_s)
                else:
                    left.append(position)
            if len(left) == len(pending):
                break
            pending = left
        return accounted

    def shown_replacer(self, position: int, until_s: float, shown: set[str]) -> bool:
        """Whether `shown` holds the value of a write that replaced the write at `position`,
        directly or through a chain, by the observation rule; only writes started by
        `until_s` are looked at (what a view ending then can show)."""
        # process -> the first of its positions already queued (all up to until_s are)
        floor: dict[int, int] = {}
        queue = [position]
        while queue:
            op = self.writes[queue.pop()]
            for p, at in self.observed.get(op.value, {}).items():
                starts = self.starts.get(p, [])
                low = bisect_left(starts, at)
                top = floor.get(p)
                if top is None:
                    top = bisect_right(starts, until_s)
                if low >= top:
                    continue
                floor[p] = low
                for replacer in self.mine[p][low:top]:
                    if replacer != position and self.writes[replacer].value in shown:
                        return True
                    queue.append(replacer)
        return False


def _by_key(history: Iterable[Op]) -> dict[str, _KeyWrites]:
    keys: dict[str, _KeyWrites] = defaultdict(_KeyWrites)
    for op in history:
        key = keys[op.key]
        if op.kind == "write":
            key.writes.append(op)
        key.observe(op)
    for key in keys.values():
        key.finish()
    return keys


def lost_writes(history: History, final: FinalStates) -> list[Violation]:
    violations = []
    for key, writes in _by_key(history).items():
        present = final_values(final.get(key, {}))
        accounted = writes.accounted(present)
        for op, ok in zip(writes.writes, accounted, strict=True):
            if op.outcome == "ok" and not ok:
                violations.append(
                    Violation(
                        "lost-write",
                        key,
                        f"value {op.value!r} acknowledged to process {op.process} at"
                        f" {op.end_s:.3f} s is not on any primary and no surviving write by a"
                        " process that had observed it replaced it",
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
                        f"{first_node} holds {sorted(first.values)} clock [{first.clock}];"
                        f" {node} holds {sorted(state.values)} clock [{state.clock}]",
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
        # A refused write did not happen; one started after the view cannot be in it.
        if op.kind != "write" or op.outcome == "fail":
            continue
        if before_s is not None and op.start_s >= before_s:
            continue
        writers[op.key].add(op.process)
        unknown[op.key] += op.outcome == "unknown"
    return {key: len(processes) + unknown[key] for key, processes in writers.items()}


class _Bound:
    """writers_per_key of one key at any time, by bisection: each process counts from its
    first write that was not refused, each unknown write from its start."""

    def __init__(self, writes: Iterable[Op]) -> None:
        first: dict[int, float] = {}
        unknown = []
        for op in writes:
            if op.outcome == "fail":
                continue
            first[op.process] = min(first.get(op.process, math.inf), op.start_s)
            if op.outcome == "unknown":
                unknown.append(op.start_s)
        self._first = sorted(first.values())
        self._unknown = sorted(unknown)

    def before(self, at_s: float) -> int:
        return bisect_left(self._first, at_s) + bisect_left(self._unknown, at_s)


def _views(history: History) -> Iterable[tuple[Op, str]]:
    """The ops that showed their process a view of the key: ok reads and ok return_body
    puts (a put without it returns no values, so () tells them apart)."""
    for op in history:
        if op.outcome != "ok":
            continue
        if op.kind == "read":
            yield op, f"a read by process {op.process} at {op.end_s:.3f} s"
        elif op.values:
            yield op, f"a return-body put by process {op.process} at {op.end_s:.3f} s"


def sibling_bound(history: History, final: FinalStates) -> tuple[list[Violation], int]:
    """Violations, and the most siblings seen anywhere."""
    bounds = {key: _Bound(writes.writes) for key, writes in _by_key(history).items()}
    overall = writers_per_key(history)
    violations = []
    most = 0
    seen: list[tuple[str, tuple[str, ...], str, int]] = [
        (op.key, op.values, where, bounds[op.key].before(op.end_s)) for op, where in _views(history)
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
    """Views (reads, return_body puts) and final replicas that hold one value twice (values
    are unique per write)."""
    doubled = [op for op, _ in _views(history) if len(set(op.values)) < len(op.values)]
    keys = sum(
        1
        for replicas in final.values()
        if any(s is not None and len(set(s.values)) < len(s.values) for s in replicas.values())
    )
    return {
        "reads_with_duplicate_sibling": sum(1 for op in doubled if op.kind == "read"),
        "puts_with_duplicate_sibling": sum(1 for op in doubled if op.kind == "write"),
        "keys_with_duplicate_sibling": keys,
    }


def stale_reads(history: History) -> dict[str, Any]:
    """Reads that missed their own process's last acknowledged write of the key (neither its
    value nor that of a write that replaced it by observation)."""
    keys = _by_key(history)
    position = {id(op): i for writes in keys.values() for i, op in enumerate(writes.writes)}
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
            shown = set(op.values)
            if mine.value not in shown and not keys[op.key].shown_replacer(
                position[id(mine)], op.end_s, shown
            ):
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

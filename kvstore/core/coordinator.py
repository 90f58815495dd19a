"""Quorum coordination of one request, sans I/O: events in, actions out.

A coordinator is told which replicas to contact; it answers with the messages to send and,
as replies and failures arrive, with its outcome. The node runtime does the sending, the
timing and the storage; nothing here awaits, so the same logic runs under a simulator.
Answer counting is the native QuorumTracker (the coordinator's hot loop).

Riak's split is the model: get_core/put_core hold the pure quorum logic, the FSMs the I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from kvstore import _native
from kvstore.core.versions import EMPTY, KeyState, is_stale, merge
from kvstore.errors import InvalidOption, Unavailable


class Outcome(enum.Enum):
    PENDING = _native.PENDING_STATE
    SUCCEEDED = _native.SUCCEEDED_STATE
    FAILED = _native.FAILED_STATE


@dataclass(frozen=True, slots=True)
class ReadReplica:
    target: str


@dataclass(frozen=True, slots=True)
class MergeReplica:
    target: str
    state: KeyState


class _Quorum:
    def __init__(self, what: str, targets: Sequence[str], required: int) -> None:
        if not targets:
            raise Unavailable(f"{what}: no replicas to contact", 0, required)
        if len(set(targets)) != len(targets):
            raise ValueError("targets must be distinct")
        if required > len(targets):
            raise InvalidOption(
                f"{what}: {required} replicas required but only {len(targets)} exist"
            )
        self._what = what
        self.targets = tuple(targets)
        self._index = {t: i for i, t in enumerate(targets)}
        self._tracker = _native.QuorumTracker(len(targets), required)
        self.failures: dict[str, str] = {}

    @property
    def outcome(self) -> Outcome:
        return Outcome(self._tracker.state())

    @property
    def answered(self) -> int:
        return self._tracker.ok_count

    @property
    def required(self) -> int:
        return self._tracker.required

    def _ok(self, target: str) -> Outcome:
        return Outcome(self._tracker.ok(self._index[target]))

    def on_failure(self, target: str, reason: str) -> Outcome:
        if not self._tracker.answered(self._index[target]):
            self.failures[target] = reason
        return Outcome(self._tracker.fail(self._index[target]))

    def unavailable(self, why: str = "") -> Unavailable:
        """The error for a request that ended without its quorum."""
        detail = "; ".join(f"{t}: {r}" for t, r in sorted(self.failures.items()))
        pending = self._tracker.pending
        message = (
            f"{self._what}: {self.answered} of {self.required} required replicas answered"
            f" ({len(self.targets)} contacted, {len(self.failures)} failed, {pending} pending)"
        )
        if why:
            message += f", {why}"
        if detail:
            message += f"; failures: {detail}"
        return Unavailable(message, self.answered, self.required)


class GetCoordinator(_Quorum):
    """Reads a key from its replicas and merges what at least `r` of them hold."""

    def __init__(self, targets: Sequence[str], r: int) -> None:
        super().__init__("get", targets, r)
        self.replies: dict[str, KeyState] = {}

    def start(self) -> list[ReadReplica]:
        return [ReadReplica(t) for t in self.targets]

    def on_reply(self, target: str, state: KeyState | None) -> Outcome:
        if not self._tracker.answered(self._index[target]):
            self.replies[target] = state if state is not None else EMPTY
        return self._ok(target)

    def result(self) -> KeyState:
        merged = EMPTY
        for state in self.replies.values():
            merged = merge(merged, state)
        return merged

    def stale_targets(self, merged: KeyState) -> list[str]:
        """Replicas that answered with less than the merged state (read repair targets)."""
        return [t for t, state in self.replies.items() if is_stale(state, merged)]


class PutCoordinator(_Quorum):
    """Replicates a write that the coordinating replica `local` has already applied.

    The local write counts as the first acknowledgement; the resulting state is shipped to
    every other target, which merges it. Success at `w` acknowledgements.
    """

    def __init__(self, local: str, targets: Sequence[str], w: int) -> None:
        if local not in targets:
            raise ValueError("the coordinating replica must be one of the targets")
        super().__init__("put", targets, w)
        self.local = local

    def start(self, applied: KeyState) -> list[MergeReplica]:
        self._ok(self.local)
        return [MergeReplica(t, applied) for t in self.targets if t != self.local]

    def on_ack(self, target: str) -> Outcome:
        return self._ok(target)

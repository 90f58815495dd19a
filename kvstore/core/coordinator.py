"""Quorum coordination of one request, sans I/O: events in, actions out.

A coordinator is told which replicas to contact; it answers with the messages to send and,
as replies and failures arrive, with its outcome. The node runtime does the sending, the
timing and the storage; nothing here awaits, so the same logic runs under a simulator.
Answer counting is the native QuorumTracker (the coordinator's hot loop).

Riak's split is the model: get_core/put_core hold the pure quorum logic, the FSMs the I/O.

Sloppy quorum (Dynamo 4.6): a coordinator may be given, besides the key's primaries, the
fallbacks after them in preference order. A primary that is down (by the failure detector),
fails, or (for writes) is slow, has its place taken by the next fallback, which for a write
stores a hint naming the primary it stands in for; answers of stand-ins count towards the
quorum. A strict request (Riak's PR/PW) is given no fallbacks.

Actions are queued and taken with `take_actions()` after every event, so an event that
needs new calls (a stand-in) hands them to the runtime the same way `start` does.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

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
    # Set when `target` is a fallback standing in for this primary: it keeps a hint.
    hint_for: str | None = None


A = TypeVar("A", ReadReplica, MergeReplica)


class QuorumRequest(Generic[A]):
    """What a get and a put coordinator share: the targets, the stand-ins, the answer
    count (native), and the actions queued for the runtime."""

    def __init__(
        self,
        what: str,
        targets: Sequence[str],
        required: int,
        fallbacks: Sequence[str] = (),
        down: Collection[str] = (),
    ) -> None:
        if not targets:
            raise Unavailable(f"{what}: no replicas to contact", 0, required)
        if required > len(targets):
            raise InvalidOption(
                f"{what}: {required} replicas required but only {len(targets)} exist"
            )
        spare = tuple(fallbacks)[: _native.MAX_TARGETS - len(targets)]
        everyone = tuple(targets) + spare
        if len(set(everyone)) != len(everyone):
            raise ValueError("targets and fallbacks must be distinct")
        self._what = what
        self.targets = tuple(targets)
        self._index = {t: i for i, t in enumerate(everyone)}
        self._tracker = _native.QuorumTracker(len(everyone), required)
        self.failures: dict[str, str] = {}
        self._spare = deque(spare)
        self._down = set(down)
        # fallback -> the primary whose place it takes
        self.stand_ins: dict[str, str] = {}
        # Everyone called (or, for a primary the detector holds down, failed without a call).
        self.contacted: list[str] = list(targets)
        self._actions: list[A] = []

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

    def _contact_primaries(self) -> list[str]:
        """The primaries to call now; those the failure detector holds down are failed at
        once and replaced by stand-ins where fallbacks allow."""
        for target in self.targets:
            if target in self._down:
                self._fail(target, "down (failure detector)")
        return [t for t in self.targets if t not in self._down]

    def _fail(self, target: str, reason: str) -> Outcome:
        index = self._index[target]
        if not self._tracker.answered(index):
            self.failures[target] = reason
            self._tracker.fail(index)
            self._stand_in(self.stand_ins.get(target, target))
        return self.outcome

    def _stand_in(self, primary: str) -> None:
        """Queue a call to the next usable fallback, in place of `primary`."""
        while self._spare:
            fallback = self._spare.popleft()
            if fallback in self._down:
                self.failures[fallback] = "down (failure detector)"
                self._tracker.fail(self._index[fallback])
                continue
            self.stand_ins[fallback] = primary
            self.contacted.append(fallback)
            self._actions.append(self._call(fallback, primary))
            return

    def _call(self, target: str, primary: str) -> A:
        raise NotImplementedError

    def on_failure(self, target: str, reason: str) -> Outcome:
        return self._fail(target, reason)

    def take_actions(self) -> list[A]:
        """Calls queued by the last events (stand-ins), for the runtime to start."""
        actions, self._actions = self._actions, []
        return actions

    @property
    def settled(self) -> bool:
        """Every call made has answered or failed: nothing more will arrive."""
        return all(self._tracker.answered(self._index[t]) for t in self.contacted)

    def unavailable(self, why: str = "") -> Unavailable:
        """The error for a request that ended without its quorum."""
        detail = "; ".join(f"{t}: {r}" for t, r in sorted(self.failures.items()))
        silent = sorted(t for t in self.contacted if not self._tracker.answered(self._index[t]))
        pending = len(silent)
        contacted = len(self.contacted)
        message = (
            f"{self._what}: {self.answered} of {self.required} required replicas answered"
            f" ({contacted} contacted, {len(self.failures)} failed, {pending} pending)"
        )
        if why:
            message += f", {why}"
        if detail:
            message += f"; failures: {detail}"
        if silent:
            message += f"; no answer from: {', '.join(silent)}"
        return Unavailable(message, self.answered, self.required)


class GetCoordinator(QuorumRequest[ReadReplica]):
    """Reads a key from its replicas and merges what at least `r` of them hold."""

    def __init__(
        self,
        targets: Sequence[str],
        r: int,
        fallbacks: Sequence[str] = (),
        down: Collection[str] = (),
    ) -> None:
        super().__init__("get", targets, r, fallbacks, down)
        self.replies: dict[str, KeyState] = {}
        self._merged: tuple[int, KeyState] | None = None

    def start(self) -> list[ReadReplica]:
        calls = [ReadReplica(t) for t in self._contact_primaries()]
        return calls + self.take_actions()

    def _call(self, target: str, primary: str) -> ReadReplica:
        return ReadReplica(target)

    def on_reply(self, target: str, state: KeyState | None) -> Outcome:
        if not self._tracker.answered(self._index[target]):
            self.replies[target] = state if state is not None else EMPTY
        return self._ok(target)

    def result(self) -> KeyState:
        """The replies merged (once per set of replies: the answer and read repair share it)."""
        if self._merged is not None and self._merged[0] == len(self.replies):
            return self._merged[1]
        states = iter(self.replies.values())
        merged = next(states, EMPTY)
        for state in states:
            if state != merged:  # replicas mostly agree: equal states need no merge
                merged = merge(merged, state)
        self._merged = (len(self.replies), merged)
        return merged

    def stale_targets(self, merged: KeyState) -> list[str]:
        """Primaries that answered with less than the merged state (read repair targets).
        Stand-ins are left out: they hold hints, which reach the primary by handoff."""
        return [
            t
            for t, state in self.replies.items()
            if t not in self.stand_ins and state != merged and is_stale(state, merged)
        ]


class PutCoordinator(QuorumRequest[MergeReplica]):
    """Replicates a write that the coordinating replica `local` has already applied.

    The local write counts as the first acknowledgement; the resulting state is shipped to
    every other target, which merges it. Success at `w` acknowledgements. A primary that
    fails, or is reported slow (`on_slow`), gets a stand-in that keeps a hint for it.
    """

    def __init__(
        self,
        local: str,
        targets: Sequence[str],
        w: int,
        fallbacks: Sequence[str] = (),
        down: Collection[str] = (),
    ) -> None:
        if local not in targets:
            raise ValueError("the coordinating replica must be one of the targets")
        super().__init__("put", targets, w, fallbacks, set(down) - {local})
        self.local = local
        self._state: KeyState = EMPTY
        self._acked: set[str] = set()

    def start(self, applied: KeyState) -> list[MergeReplica]:
        self._state = applied
        self.on_ack(self.local)
        calls = [MergeReplica(t, applied) for t in self._contact_primaries() if t != self.local]
        return calls + self.take_actions()

    def _call(self, target: str, primary: str) -> MergeReplica:
        return MergeReplica(target, self._state, hint_for=primary)

    def on_ack(self, target: str) -> Outcome:
        """A replica acknowledged. A primary and its stand-in hold one copy between them
        (the stand-in's is for the primary): only the first of the two counts towards w."""
        slot = self.stand_ins.get(target, target)
        holders = [slot, *(f for f, p in self.stand_ins.items() if p == slot)]
        if any(h != target and h in self._acked for h in holders):
            self._acked.add(target)
            return self.outcome
        self._acked.add(target)
        return self._ok(target)

    def on_slow(self, target: str) -> None:
        """`target`, a primary, has not answered in the time a write may wait for one:
        a stand-in takes its place too (whichever answers counts; a hint is harmless)."""
        index = self._index[target]
        if (
            target in self.targets
            and not self._tracker.answered(index)
            and target not in self.stand_ins.values()
        ):
            self._stand_in(target)

    @property
    def settled(self) -> bool:
        """Every primary's place is taken: acknowledged by it or by a stand-in, or failed
        with no fallback left. Replication runs on in the background until then."""
        acked = self._acked
        for primary in self.targets:
            if primary in acked:
                continue
            if any(p == primary and f in acked for f, p in self.stand_ins.items()):
                continue
            holders = [primary, *(f for f, p in self.stand_ins.items() if p == primary)]
            if all(h in self.failures for h in holders) and not self._spare:
                continue
            return False
        return True

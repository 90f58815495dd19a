"""Circuit breakers: whether a client should send to a node now, from how its recent tries
went. Sans-IO: callers pass the time (monotonic seconds) and a random source."""

from __future__ import annotations

import random
from enum import Enum

from kvstore.client.policy import BreakerPolicy


class BreakerState(Enum):
    CLOSED = "closed"  # trusted
    OPEN = "open"  # skipped until its backoff ends
    HALF_OPEN = "half_open"  # backoff over: one call may probe it


class CircuitBreaker:
    __slots__ = ("_open_until", "_policy", "_probing", "_rng", "_slow", "failures", "opened")

    def __init__(self, policy: BreakerPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self.failures = 0  # openings in a row, since the last success
        self._slow = 0  # hedged tries in a row, since the last success
        self._open_until = 0.0
        self._probing = False
        self.opened = 0  # times it opened, all told

    def state(self, now: float) -> BreakerState:
        if self.failures == 0:
            return BreakerState.CLOSED
        return BreakerState.OPEN if now < self._open_until else BreakerState.HALF_OPEN

    def available(self, now: float) -> bool:
        """Whether a call may go to the node now (without taking the half-open probe)."""
        state = self.state(now)
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    def take(self, now: float) -> None:
        """A call goes to the node: in the half-open state it is the one probe."""
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probing = True

    def release(self) -> None:
        """A try ended without telling whether the node is well (the caller gave up, the
        call was too large): a probe it was may be taken by the next call."""
        self._probing = False

    def success(self) -> None:
        self.failures = 0
        self._slow = 0
        self._probing = False

    def failure(self, now: float) -> None:
        """A try failed or timed out: the breaker opens, or, when a probe failed, opens
        again for twice as long. Tries that were out together and fail together while it
        is open do not lengthen it: one bad moment is one opening."""
        if self.state(now) is BreakerState.OPEN:
            return
        self.failures += 1
        self._probing = False
        policy = self._policy
        backoff = policy.open_s * (1 << min(self.failures - 1, 30))
        backoff *= 1 + policy.jitter * (2 * self._rng.random() - 1)
        self._open_until = now + min(policy.max_open_s, backoff)
        self.opened += 1

    def slow(self, now: float) -> None:
        """A try was hedged: it had not answered when most do. Only a run of them opens the
        breaker (a healthy node is the slowest one now and then); a late answer of such a
        try does not end the run (see `late`)."""
        self._slow += 1
        if self._slow >= self._policy.slow_limit and self.state(now) is BreakerState.CLOSED:
            self._slow = 0
            self.failure(now)

    def late(self) -> None:
        """A try that was hedged over answered after all: the node works, but slowly, so
        the run of slow tries goes on; only a probe it was is released."""
        self._probing = False

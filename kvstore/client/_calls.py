"""One client call's tries: the first on the best node for its key, a hedge on the next one
when the first is slow, retries after failures another node may not share. Driven by the
tries' done callbacks and two timers (no task per call): a blocking Client's calls pass
through here as well, so this is the client's hot path."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client.latency import LatencyWindow
from kvstore.client.policy import RetryPolicy
from kvstore.client.routing import NodeSelector
from kvstore.errors import (
    BatchTooLarge,
    Draining,
    InvalidArgument,
    InvalidKey,
    KvError,
    Overloaded,
    PermissionDenied,
    Stalled,
    StorageUnavailable,
    Timeout,
    TransportError,
    Unauthenticated,
    Unavailable,
    ValueTooLarge,
)
from kvstore.rpc.status import error_from_call
from kvstore.rpc.streams import CallTooLarge, NeverSent, OutcomeUnknown

# A call larger than the node takes (it announces its limit) fails before it is sent, as:
TOO_LARGE: dict[str, type[InvalidArgument]] = {
    "get": InvalidKey,
    "put": ValueTooLarge,
    "get_many": BatchTooLarge,
    "put_many": BatchTooLarge,
}
REFUSED_CREDENTIALS: dict[str, type[KvError]] = {
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
}


@dataclass(slots=True)
class ClientStats:
    """What a client's calls did, since it was made (`Client.stats()`)."""

    calls: int = 0
    # Calls with a key, made while the client knew the ring, and of those the ones whose
    # first try went to one of the key's primaries (ring-aware routing).
    routed_calls: int = 0
    to_primary: int = 0
    tries: int = 0  # sent to a node (hedges and retries included)
    retries: int = 0  # tries after a failure
    hedges: int = 0  # second tries of a slow call
    hedges_won: int = 0  # calls answered by their hedge
    hedges_over_budget: int = 0  # hedges not sent: HedgePolicy.max_share was used up
    write_hedges_declined: int = 0  # slow writes not hedged: their node still answered
    failed: int = 0  # calls that raised
    topology_refreshes: int = 0
    breaker_opens: int = 0
    breakers: dict[str, str] = field(default_factory=dict)  # node -> closed|open|half_open


# Server-reported failures worth a try elsewhere (or later), and those of them that count
# against the node that reported them (it is overloaded, stalled or its disk failed;
# Unavailable is about the key's replicas, not the node that coordinated). A server's Timeout
# is not retried: it spent the call's budget (its timeout_ms is the call's).
_RETRYABLE = (Unavailable, Overloaded, StorageUnavailable)
_NODE_FAULTS = (Overloaded, StorageUnavailable, Stalled)
# Failures of a call refused before anything was done: a write is retried after these only
# (and after tries that never left). After any other (Unavailable: the coordinator applied it
# and fewer than w replicas answered; a try that timed out or lost its connection) the write
# may be stored somewhere, and a second coordinator that does not hold it would make it again:
# two siblings of one write, of which a writer who writes the key again with the context it
# got replaces only one (found by the chaos isolate and split scenarios). Such a retry is
# RetryPolicy(ambiguous_writes=True).
_UNTOUCHED = (Draining, Overloaded, StorageUnavailable, Stalled)


# The least time a node is given to answer the health check that decides whether a slow
# write of it is hedged.
MIN_ALIVE_CHECK_S = 0.05


class HedgeBudget:
    """How many hedges a client may send now: a hedge is another try of a call, more work for
    a cluster that may be slow because it is already busy, so at most `share` of the calls
    are hedged, with bursts of at most `burst` (Finagle's backup-request budget). Each call
    earns `share` of a hedge; each hedge spends one."""

    __slots__ = ("_burst", "_credit", "_share")

    def __init__(self, share: float, burst: float) -> None:
        self._share = share
        self._burst = burst
        self._credit = burst if share > 0 else 0.0  # share 0: no hedge, not even a burst

    def earn(self) -> None:
        self._credit = min(self._burst, self._credit + self._share)

    def spend(self) -> bool:
        if self._credit < 1:
            return False
        self._credit -= 1
        return True


class _Try:
    __slots__ = ("address", "hedge", "overtaken", "started")

    def __init__(self, address: str, started: float, hedge: bool) -> None:
        self.address = address
        self.started = started
        self.hedge = hedge
        self.overtaken = False


class Tries:
    """The tries of one call. `submit(address, remaining_s)` sends it to one node (a future
    of its ClientResult, failing as kvstore.rpc.streams does)."""

    __slots__ = (
        "_alive",
        "_alive_check",
        "_attempts",
        "_breaker_of",
        "_budget",
        "_deadline",
        "_deadline_timer",
        "_errors",
        "_hedge_delay",
        "_hedge_timer",
        "_kind",
        "_latency",
        "_loop",
        "_nodes",
        "_pending",
        "_policy",
        "_reported",
        "_retry_timer",
        "_rng",
        "_sent",
        "_stats",
        "_submit",
        "_unsent",
        "_writes",
        "result",
    )

    def __init__(
        self,
        submit: Callable[[str, float], asyncio.Future[pb.ClientResult]],
        kind: str,
        nodes: list[str],
        selector: NodeSelector,
        deadline: float,
        hedge_delay: float | None,
        policy: RetryPolicy,
        latency: LatencyWindow,
        stats: ClientStats,
        rng: random.Random,
        budget: HedgeBudget | None = None,
        alive: Callable[[str, float, float], asyncio.Future[bool]] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._budget = budget
        # Whether a node still answers (anything since a time, else its health check within
        # a time): asked before a write is hedged.
        self._alive = alive
        self._alive_check: asyncio.Future[bool] | None = None
        self._submit = submit
        self._kind = kind
        self._writes = kind.startswith("put")
        self._nodes = nodes
        self._breaker_of = selector.breaker
        self._deadline = deadline
        self._hedge_delay = hedge_delay
        self._policy = policy
        self._latency = latency
        self._stats = stats
        self._rng = rng
        # Each try out: its node, when it left, whether it is a hedge, and whether a hedge
        # has since been sent past it (it was slow).
        self._pending: dict[asyncio.Future[pb.ClientResult], _Try] = {}
        self._errors: list[KvError] = []
        # The last failure a node answered with: what the call raises when it gives up, as
        # it says more ("1 of 3 required replicas answered") than a later node that could
        # not be reached.
        self._reported: KvError | None = None
        self._sent = 0  # tries that left (the retry budget counts these)
        self._unsent = 0  # tries that could not be sent, in a row
        self._attempts = 0  # nodes taken from the order so far
        self._hedge_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self.result: asyncio.Future[Any] = self._loop.create_future()
        self.result.add_done_callback(self._ended)

    def start(self) -> None:
        # The tries fail by their own deadlines too; this one also covers a retry's backoff,
        # and a try whose transport failed to keep its deadline.
        self._deadline_timer = self._loop.call_at(self._deadline, self._expired)
        self._try(hedge=False)
        if self._hedge_delay is not None and len(self._nodes) > 1:
            self._hedge_timer = self._loop.call_later(self._hedge_delay, self._hedge)

    # ---- sending ----

    def _try(self, hedge: bool) -> None:
        if self.result.done():
            return
        now = self._loop.time()
        remaining = self._deadline - now
        if remaining <= 0:
            self._finish(self._last_error(Timeout("deadline exceeded before a node answered")))
            return
        address = self._nodes[self._attempts % len(self._nodes)]
        self._attempts += 1
        breaker = self._breaker_of(address)
        breaker.take(now)
        self._stats.tries += 1
        try:
            future = self._submit(address, remaining)
        except Exception as exc:  # a bug below us: the call fails, the probe is freed
            breaker.release()
            self._finish(KvError(f"{address}: {type(exc).__name__}: {exc}"))
            return
        self._pending[future] = _Try(address, now, hedge)
        future.add_done_callback(self._answered)

    def _hedge(self) -> None:
        self._hedge_timer = None
        if self.result.done() or not self._pending:
            return
        if self._writes and self._alive is not None:
            # A write goes to a second coordinator only when its node stopped answering:
            # see HedgePolicy. The first try's node is asked now; the answer decides.
            first = next(iter(self._pending.values()))
            # As long again as the write has waited (at least MIN_ALIVE_CHECK_S): a node
            # that answers a health check slower than its writes is as good as stopped.
            delay = self._hedge_delay or 0.0
            within = max(MIN_ALIVE_CHECK_S, 2 * delay)
            address = first.address
            self._alive_check = self._alive(address, within, first.started)
            self._alive_check.add_done_callback(partial(self._checked, address))
            return
        self._send_hedge()

    def _checked(self, address: str, check: asyncio.Future[bool]) -> None:
        self._alive_check = None
        if self.result.done() or not self._pending or check.cancelled():
            return
        if check.exception() is None and check.result():
            self._stats.write_hedges_declined += 1  # it answers: left to finish the write
            return
        # Silent: held suspect at once (as a failed probe would), so the next calls do not
        # each wait for a check of their own.
        self._breaker_of(address).failure(self._loop.time())
        self._send_hedge()

    def _send_hedge(self) -> None:
        if self._budget is not None and not self._budget.spend():
            self._stats.hedges_over_budget += 1
            return
        # Not yet held against their nodes: a client that fell behind (its loop busy, a
        # pause of its own) finds every call out slow at once, and then the first tries
        # mostly answer before their hedges. Only a try its hedge beats was slow (below).
        for attempt in self._pending.values():
            attempt.overtaken = True
        self._stats.hedges += 1
        self._try(hedge=True)

    # ---- answers ----

    def _answered(self, future: asyncio.Future[pb.ClientResult]) -> None:
        attempt = self._pending.pop(future)
        address = attempt.address
        now = self._loop.time()
        breaker = self._breaker_of(address)
        if future.cancelled():
            breaker.release()  # the caller gave up, or another try answered a write
            return
        exc = future.exception()
        if exc is None:
            result = future.result()
            if result.WhichOneof("result") == "error":
                reported = error_from_call(result.error, address)
                if isinstance(reported, Draining):
                    # Refused before anything was done: the next node at once, as if the
                    # call had never left.
                    breaker.failure(now)
                    self._failed(reported, True, sent=False)
                    return
                if isinstance(reported, _NODE_FAULTS):
                    breaker.failure(now)
                else:
                    breaker.success()  # it answered: the request was the trouble
                self._failed(reported, isinstance(reported, _RETRYABLE), sent=True)
                return
            if attempt.overtaken:
                breaker.late()
            else:
                breaker.success()
            self._latency.record(now - attempt.started)
            if not self.result.done():
                if attempt.hedge:
                    self._stats.hedges_won += 1
                    for overtaken in self._pending.values():
                        self._breaker_of(overtaken.address).slow(now)
                self.result.set_result(result)
            return
        if isinstance(exc, NeverSent):
            if exc.code in REFUSED_CREDENTIALS:
                # Every node of the cluster checks the same credentials: say so now.
                breaker.release()
                self._finish(REFUSED_CREDENTIALS[exc.code](str(exc)))
                return
            breaker.failure(now)
            self._failed(TransportError(f"cannot reach node ({address}): {exc}"), True, False)
        elif isinstance(exc, OutcomeUnknown):
            breaker.failure(now)
            if exc.deadline:
                error: KvError = Timeout(f"deadline exceeded ({address}): the outcome is unknown")
            else:
                error = TransportError(
                    f"connection to {address} lost mid-call: the outcome is unknown ({exc})"
                )
            self._failed(error, True, True)
        elif isinstance(exc, CallTooLarge):
            breaker.release()
            self._finish(TOO_LARGE.get(self._kind, BatchTooLarge)(str(exc)))
        elif isinstance(exc, KvError):
            breaker.release()
            self._failed(exc, False, True)
        else:
            breaker.release()
            self._finish(KvError(f"{address}: {type(exc).__name__}: {exc}"))

    def _failed(self, error: KvError, retryable: bool, sent: bool) -> None:
        if self.result.done():
            return  # a loser's failure: its breaker has heard of it
        self._errors.append(error)
        if sent and not isinstance(error, TransportError | Timeout):
            self._reported = error
        if (
            retryable
            and sent
            and self._writes
            and not self._policy.ambiguous_writes
            and not isinstance(error, _UNTOUCHED)
        ):
            # It may be stored (see _UNTOUCHED): not tried again; but a try of it still out
            # (the one a hedge overtook, or the hedge) may yet answer, and ends the call.
            if self._pending:
                return
            self._finish(self._reported or error)
            return
        if not retryable:
            self._finish(error)
            return
        if any(not attempt.overtaken for attempt in self._pending.values()):
            return  # another try is still out and not yet slow: it may well answer
        if not sent:
            # It never left: the next node at once, until every node was tried once.
            self._unsent += 1
            if self._unsent < len(self._nodes):
                self._try(hedge=False)
                return
            if not all(isinstance(e, Draining) for e in self._errors[-len(self._nodes) :]):
                error = TransportError(
                    "no node could be reached: " + "; ".join(str(e) for e in self._errors[-3:])
                )
        self._unsent = 0
        self._sent += 1
        if self._sent >= self._policy.attempts:
            self._finish(self._reported or error)
            return
        delay = self._policy.backoff(self._sent, self._rng)
        if isinstance(error, Overloaded):
            delay = max(delay, error.retry_after_ms / 1000)
        if self._loop.time() + delay >= self._deadline:
            self._finish(self._reported or error)
            return
        self._stats.retries += 1
        self._retry_timer = self._loop.call_later(delay, self._try, False)

    def _expired(self) -> None:
        self._deadline_timer = None
        now = self._loop.time()
        for attempt in self._pending.values():
            # No answer within the call's deadline: as bad as a failure (its own deadline,
            # the same, may not have fired yet; the call off below cancels it first).
            self._breaker_of(attempt.address).failure(now)
        self._finish(
            self._last_error(
                Timeout("deadline exceeded: no node answered in time; the outcome is unknown")
            )
        )

    def _last_error(self, fallback: KvError) -> KvError:
        return self._reported or (self._errors[-1] if self._errors else fallback)

    def _finish(self, error: KvError) -> None:
        if not self.result.done():
            self.result.set_exception(error)

    def _ended(self, result: asyncio.Future[Any]) -> None:
        for timer in (self._hedge_timer, self._deadline_timer, self._retry_timer):
            if timer is not None:
                timer.cancel()
        self._hedge_timer = self._deadline_timer = self._retry_timer = None
        # A health check out is left to end (within its timeout): it may be shared by other
        # calls to the same node.
        self._alive_check = None
        if result.cancelled() or self._writes:
            # A write's other tries are called off once one answered: each applied is a
            # twin of the write, more work for the replicas, and one landing after the key
            # was written again is dropped only where the replicas remember the write as
            # replaced. (The slow node's breaker has heard of it as slow.)
            for future in list(self._pending):
                future.cancel()
        # A read's tries still out are left to end by themselves: their answers (or their
        # deadlines) tell the breakers whether their nodes are well.

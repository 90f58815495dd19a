"""Draining a node before it stops (`kvstore drain`, Kubernetes' preStop hook).

A node that is simply stopped drops the client requests it is coordinating (their outcome
unknown to the clients) and leaves its hints undelivered until it is back. A drain, in order:

1. stops taking client requests: health for the client service turns NOT_SERVING at once
   (load balancers and probes move away) and every new client call is refused with
   `Draining`, which clients send to another node (nothing was done);
2. lets the client requests in flight finish;
3. delivers the hints it holds now, round after round, rather than waiting for the
   periodic loop;
4. answers with what it delivered and what is left, and, unless asked to stay, stops the
   process the way SIGTERM does once that answer is sent.

Steps 2 and 3 share one deadline: the drain's timeout. Peer traffic is not gated here: the
node is still a replica (it takes merges and reads from coordinators) until it leaves or
stops.

The servicers see only `enter`/`leave` (the client gate) and `drain`/`answered`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

from kvstore.core.maintenance import DrainReport
from kvstore.errors import ClusterRefused, Draining, InvalidArgument
from kvstore.node.clock import Clock

log = logging.getLogger(__name__)

# The drain's timeout when the request gives none (0), and the most a request may ask.
DEFAULT_DRAIN_TIMEOUT_MS = 10_000
MAX_DRAIN_TIMEOUT_MS = 600_000
# Hint rounds one drain runs at most, and the pause after a round that delivered nothing
# while hints are left (their target not up yet): both bounds beside the timeout.
MAX_HINT_ROUNDS = 1_000
HINT_RETRY_S = 0.2


class DrainState(enum.Enum):
    SERVING = "serving"  # takes client requests
    DRAINING = "draining"  # refuses new ones; finishing and delivering
    DRAINED = "drained"  # refuses new ones; done (a drain that stays, or one cut short)


class Drain:
    """The drain state machine of one node, and the gate its client servicer consults.

    `deliver_hints()`: one delivery round (HintDelivery.round), the number delivered;
    `hints_held()`: how many hints this node holds; `on_draining()`: called once as the
    drain starts (turns the client health NOT_SERVING); `exit()`: stops the process (the
    node's SIGTERM path), called only after the answer of a drain that does not stay."""

    def __init__(
        self,
        clock: Clock,
        deliver_hints: Callable[[], Awaitable[int]],
        hints_held: Callable[[], int],
        on_draining: Callable[[], Awaitable[None]] | None = None,
        exit: Callable[[], None] | None = None,
    ) -> None:
        self.state = DrainState.SERVING
        self.inflight = 0
        self._clock = clock
        self._deliver_hints = deliver_hints
        self._hints_held = hints_held
        self.on_draining = on_draining
        self.exit = exit
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- the client gate ----

    def enter(self) -> None:
        """A client call starts: refused with Draining unless the node is serving."""
        if self.state is not DrainState.SERVING:
            raise Draining("this node is draining and takes no new requests: use another node")
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        """A client call that entered has ended (answered, failed or cancelled)."""
        if self.inflight <= 0:
            raise AssertionError("a client call left the drain gate without entering it")
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    # ---- the drain ----

    async def drain(self, timeout_ms: int = 0, stay: bool = False) -> DrainReport:
        """Run the drain (see the module's doc); `timeout_ms` 0: DEFAULT_DRAIN_TIMEOUT_MS.
        A drain while another runs is refused (ClusterRefused); one after a drain that
        stayed runs again (hints may have come since)."""
        if timeout_ms < 0 or timeout_ms > MAX_DRAIN_TIMEOUT_MS:
            raise InvalidArgument(
                f"drain timeout_ms must be 0 (the default) to {MAX_DRAIN_TIMEOUT_MS},"
                f" got {timeout_ms}"
            )
        if self.state is DrainState.DRAINING:
            raise ClusterRefused("a drain is already running on this node")
        deadline = self._clock.monotonic() + (timeout_ms or DEFAULT_DRAIN_TIMEOUT_MS) / 1000
        self.state = DrainState.DRAINING
        try:
            log.info("draining: refusing new client requests, %d in flight", self.inflight)
            if self.on_draining is not None:
                await self.on_draining()
            if not await self._until(self._idle.wait(), deadline):
                log.warning(
                    "drain: %d client requests still in flight at the timeout", self.inflight
                )
            delivered = await self._deliver(deadline)
        finally:
            # Cut short (cancelled, failed) or done: the node never takes clients again.
            self.state = DrainState.DRAINED
        left = self._hints_held()
        log.info("drained: %d hints delivered, %d left", delivered, left)
        return DrainReport(hints_delivered=delivered, hints_left=left, exiting=not stay)

    def answered(self, report: DrainReport) -> None:
        """The drain's answer was sent: stop the process if the drain said it would."""
        if report.exiting and self.exit is not None:
            log.info("drained: stopping")
            self.exit()

    async def _deliver(self, deadline: float) -> int:
        delivered = 0
        for _ in range(MAX_HINT_ROUNDS):
            if self._hints_held() == 0:
                break
            got: list[int] = []
            try:
                if not await self._until(self._round(got), deadline):
                    break
            except Exception as exc:  # a round that failed is retried, as the periodic loop does
                log.info("drain: a hint round failed: %s", exc)
                got.append(0)
            delivered += got[0]
            # None delivered: their targets are not up (yet): wait a little, within the
            # deadline.
            if got[0] == 0 and not await self._until(self._clock.sleep(HINT_RETRY_S), deadline):
                break
        return delivered

    async def _round(self, out: list[int]) -> None:
        out.append(await self._deliver_hints())

    async def _until(self, work: Awaitable[object], deadline: float) -> bool:
        """Run `work` until it ends (True) or `deadline` passes (False: it is cancelled)."""
        task = asyncio.ensure_future(work)
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0 and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        done, _ = await asyncio.wait({task}, timeout=max(remaining, 0))
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        task.result()  # raises what the work raised
        return True

"""The stall fence: a node whose event loop stood still (SIGSTOP, a frozen VM, a long GC or
swap storm) refuses to coordinate the client writes it reads right after, as Stalled (an
Unavailable).

While it stood still its clients gave up on the writes they had sent it and retried them
elsewhere (with their write ids): once it moves again it reads those writes from its socket
buffers as if they were new. Applying them would make each write twice, and where the
writer has written the key again since, the old value would come back as a sibling beside
the new one (a node cannot tell a write's late first try from a fresh concurrent write).
Refused untouched, they change nothing; a fresh write refused by the fence is retried by its
client on another node. Replica merges are not fenced: merging an old state is harmless.

Limits: a stall shorter than `stall_s` is not noticed (a busy 2-core machine stalls a loop
for close to a second now and then, which must not refuse writes), and writes read more
than `fence_s` after the loop moved again are taken as fresh.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from kvstore.errors import Stalled
from kvstore.node.clock import Clock

TICK_S = 0.1
STALL_S = 2.0
FENCE_S = 1.0


class StallFence:
    def __init__(
        self,
        clock: Clock,
        counters: Counter[str],
        stall_s: float = STALL_S,
        fence_s: float = FENCE_S,
    ) -> None:
        self._clock = clock
        self._counters = counters
        self._stall_s = stall_s
        self._fence_s = fence_s
        self._last_tick = clock.monotonic()
        self._fenced_until = 0.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        now = self._clock.monotonic()
        if now - self._last_tick > self._stall_s:
            self._fenced_until = now + self._fence_s
            self._counters["loop_stalls"] += 1
        self._last_tick = now

    def check(self) -> None:
        """Raise Unavailable while the loop is just out of a stall (this call may have been
        sent before it). Checked before a coordinated write changes anything."""
        now = self._clock.monotonic()
        # The ticker may not have run yet since the stall ended: the gap tells too.
        stalled = now - self._last_tick
        if stalled > self._stall_s or now < self._fenced_until:
            self._counters["writes_fenced"] += 1
            raise Stalled(
                "this node's event loop stood still"
                f" ({max(stalled, self._stall_s):.1f} s or more): writes it read just after are"
                " refused, as their clients may have retried them elsewhere; try another node"
            )

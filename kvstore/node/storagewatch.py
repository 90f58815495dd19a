"""Storage faults, seen from the node: a full disk or an IO error makes the storage refuse
writes (storage.engine); the node then reports it and gets out of it on its own.

- Health says NOT_SERVING while the fault lasts: a load balancer or an orchestrator sends
  the node no more writes it would refuse (reads still work; the node still gossips).
- The Status RPC's counters: `storage_fault` is 1 while it lasts (else 0), `storage_faults`
  counts faults begun and `storage_resumes` faults ended.
- One log line when a fault begins and one when it ends: a request refused meanwhile logs
  nothing (the client has its error; an operator wants the state, not a line per write).
- About once a second while it lasts, a probe asks the storage to resume (`try_resume`),
  so the node takes writes again once space returns, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from kvstore.storage.engine import Storage

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0


class StorageWatch:
    def __init__(
        self,
        storage: Storage,
        counters: Counter[str],
        report: Callable[[bool], Awaitable[None]],
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        """`report(writable)`: told when a fault begins (False) and when it ends (True)."""
        self._storage = storage
        self._counters = counters
        self._report = report
        self._interval_s = interval_s
        self._woken = asyncio.Event()
        self._in_fault = False
        self._since = 0.0
        # Present from the start, so a dashboard sees 0 rather than no such counter.
        counters["storage_fault"] = 0

    def _wake(self) -> None:
        # Called by the storage inside the write that failed: the report waits for the
        # watch's own turn, so the request is answered first.
        self._woken.set()

    async def check(self) -> None:
        """One turn: report a fault that began, or probe one that lasts."""
        loop = asyncio.get_running_loop()
        fault = self._storage.fault
        if fault is not None and not self._in_fault:
            self._in_fault, self._since = True, loop.time()
            self._counters["storage_fault"] = 1
            self._counters["storage_faults"] += 1
            log.error(
                "storage fault, writes refused and health NOT_SERVING until it ends"
                " (probing every %.1f s): %s",
                self._interval_s,
                fault,
            )
            await self._report(False)
            return
        if self._in_fault and self._storage.try_resume():
            self._in_fault = False
            self._counters["storage_fault"] = 0
            self._counters["storage_resumes"] += 1
            log.warning(
                "storage fault over after %.1f s: writes taken again, health SERVING",
                loop.time() - self._since,
            )
            await self._report(True)

    async def run(self) -> None:
        """Watch until cancelled: woken at once by a fault, else every interval."""
        self._storage.on_fault = self._wake
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self._interval_s)
                self._woken.clear()
                try:
                    await self.check()
                except Exception:
                    # A failed probe must not end the watch: the next turn tries again.
                    log.exception("storage watch turn failed")
        finally:
            self._storage.on_fault = None

"""The one source of time for a node's roles: monotonic seconds for deadlines and the
failure detector, wall-clock milliseconds for write timestamps, hint ages and tombstone GC,
and the waiting that goes with them. Injected, so tests and the simulator run the same roles
on a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, the failure detector)."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the epoch (timestamps for display, hint ages, GC): never used
        to order versions."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        """Call `callback` on the event loop once `when` (monotonic) has come."""
        ...


class SystemClock:
    """The process's clocks. `monotonic` is the event loop's own clock (asyncio's default
    loop time is time.monotonic), so deadlines and the loop's timers agree."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_at(when, callback)

"""An event loop on a thread of its own: what lets the blocking Client share the asyncio
client's streams. Calls from any thread run there and block their caller until done."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "kvstore-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for it; its exception is raised here. A
        caller interrupted while waiting (KeyboardInterrupt) cancels it."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking kvstore Client call from its own loop thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop once the work left on it has ended: gRPC finishes a closed
        channel's calls on tasks of its own, and a loop closed under them would leave them
        pending (and its poller thread calling into a closed loop)."""
        if self._loop.is_closed():
            return
        try:
            self.run(_finish())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()


async def _finish() -> None:
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)
    left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


# Turns of the loop that closing channels' last callbacks get before what is left is
# cancelled.
_SETTLE_TURNS = 5

"""Group commit on the event loop: the writes and merges staged in one turn of the loop are
made durable together, by one Storage.commit (one WriteBatch, one WAL record, and with
`sync_writes` one fsync), scheduled for the next turn. A write is acknowledged only once its
commit is done, so nothing is acknowledged that a crash could lose; what a commit costs is
shared by every request that arrived together, and a lone write waits one turn, not a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from kvstore.errors import StorageError
from kvstore.storage.engine import Storage


class GroupCommit:
    """Counts, for operators and tests: `group_commits` (commits that made writes durable)
    and `group_commit_writes` (the writes and merges they made durable)."""

    def __init__(self, storage: Storage, counters: Counter[str]) -> None:
        self._storage = storage
        self._counters = counters
        self._batch: list[asyncio.Future[None]] | None = None

    def durable(self) -> asyncio.Future[None]:
        """A future that is done once everything staged so far is durable (or fails with the
        StorageError of the commit that was to store it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._storage.when_committed(lambda error: self._settle(batch, error))
            loop.call_soon(self._commit)
        batch.append(future)
        return future

    def _settle(self, batch: list[asyncio.Future[None]], error: StorageError | None) -> None:
        # The batch may be settled by a commit someone else made (a synchronous write
        # commits what is staged first): writes staged after it start a new batch.
        if self._batch is batch:
            self._batch = None
        if error is None:
            self._counters["group_commits"] += 1
            self._counters["group_commit_writes"] += len(batch)
        for future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def _commit(self) -> None:
        with contextlib.suppress(StorageError):  # each waiter has the error (`_settle`)
            self._storage.commit()

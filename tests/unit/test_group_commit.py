"""Group commit (kvstore.node.commits over Storage.stage/commit), on real RocksDB: the writes
and merges staged in one turn of the event loop are made durable by one WriteBatch; nobody
is told a write is durable before its commit; a failed commit stores none of its writes and
tells every one of them; reads see only what is committed."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kvstore.core.limits import Limits
from kvstore.core.ring import routed
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, write
from kvstore.errors import StorageError
from kvstore.node.clock import SystemClock
from kvstore.node.replica import Replica
from kvstore.storage.engine import Storage


def state(actor: str, value: bytes) -> KeyState:
    return write(EMPTY, EMPTY_CLOCK, actor, value, 1)[0]


class FailingDisk:
    """The database, but its batch writes fail while `failing` (a full or failing disk)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.failing = True

    def write(self, *args: Any, **kwargs: Any) -> Any:
        if self.failing:
            raise OSError("No space left on device")
        return self._db.write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def make_replica(storage: Storage, counters: Counter[str] | None = None) -> Replica:
    return Replica(
        "10.0.0.1:7000",
        "n1/abcd",
        storage,
        Limits(),
        SystemClock(),
        counters if counters is not None else Counter(),
        hint_max_bytes=1 << 30,
    )


@pytest.mark.parametrize("sync", [False, True])
def test_merges_staged_in_one_turn_commit_in_one_write_batch(tmp_path: Path, sync: bool) -> None:
    counters: Counter[str] = Counter()
    with Storage(tmp_path / "db", sync=sync) as storage:
        replica = make_replica(storage, counters)

        async def scenario() -> None:
            futures = [
                replica.merge(f"key-{i}".encode(), state("b/1", f"v{i}".encode()))
                for i in range(50)
            ]
            assert not any(f.done() for f in futures)  # nobody is told before the commit
            assert storage.get(b"key-0") is None  # nor does a read see it
            await asyncio.gather(*futures)

        commits = storage.commits
        asyncio.run(scenario())
        assert storage.commits - commits == 1
        assert counters["group_commits"] == 1 and counters["group_commit_writes"] == 50
        assert storage.get(b"key-49") == state("b/1", b"v49")
    with Storage(tmp_path / "db") as reopened:  # durable: there after a reopen
        assert all(reopened.get(f"key-{i}".encode()) is not None for i in range(50))


def test_writes_of_one_key_in_one_turn_build_on_each_other(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        replica = make_replica(storage)
        key = routed(b"hot")

        async def scenario() -> list[Any]:
            written = [replica.write(key, EMPTY_CLOCK, f"v{i}".encode()) for i in range(5)]
            await asyncio.gather(*(w.durable for w in written))
            return written

        written = asyncio.run(scenario())
        # Five blind writes of one key: five siblings with five distinct dots, none lost
        # though none was durable when the next was staged.
        assert [w.dot.counter for w in written] == [1, 2, 3, 4, 5]
        stored = storage.get(b"hot")
        assert stored is not None and sorted(stored.live_values) == [
            b"v0",
            b"v1",
            b"v2",
            b"v3",
            b"v4",
        ]


def test_writes_in_separate_turns_commit_separately(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        replica = make_replica(storage)

        async def scenario() -> None:
            for i in range(3):
                await replica.merge(f"k{i}".encode(), state("b/1", b"v"))

        commits = storage.commits
        asyncio.run(scenario())
        assert storage.commits - commits == 3


def test_a_failed_commit_stores_nothing_and_fails_every_write_in_it(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        replica = make_replica(storage)
        disk = FailingDisk(storage._db)
        storage._db = disk  # type: ignore[assignment]

        async def scenario() -> list[Any]:
            futures = [replica.merge(f"k{i}".encode(), state("b/1", b"v")) for i in range(10)]
            written = replica.write(routed(b"w"), EMPTY_CLOCK, b"mine")
            return await asyncio.gather(*futures, written.durable, return_exceptions=True)

        outcomes = asyncio.run(scenario())
        assert all(isinstance(o, StorageError) for o in outcomes)
        assert storage.get(b"k0") is None and storage.get(b"w") is None
        disk.failing = False
        # A full disk is a storage fault: writes stay refused until a probe resumes them.
        assert storage.fault is not None
        assert storage.try_resume()

        async def again() -> int:
            written = replica.write(routed(b"w"), EMPTY_CLOCK, b"mine")
            await written.durable
            return written.dot.counter

        # The failed write's dot was never stored, and was never seen: it is made again.
        assert asyncio.run(again()) == 1
        assert storage.get(b"w") is not None


def test_a_synchronous_write_commits_what_is_staged_first(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        replica = make_replica(storage)

        async def scenario() -> None:
            staged = replica.merge(b"a", state("b/1", b"staged"))
            # A background merge (hint delivery, anti-entropy) writes at once: what was
            # staged before it is committed first, and its waiter is told.
            storage.merge_many([(b"a", state("c/1", b"direct"))])
            assert staged.done() and staged.exception() is None
            await staged

        asyncio.run(scenario())
        stored = storage.get(b"a")
        assert stored is not None and sorted(stored.live_values) == [b"direct", b"staged"]

"""Storage faults (kvstore.storage.engine): a write the OS refused (a full disk, an IO error)
is refused with a typed error, nothing of it stored; later writes are refused at once; reads
go on; `try_resume` reopens the database once the disk has room. The errors travel over gRPC
as UNAVAILABLE and come back as the same type. Node side: the storage watch's counters,
report and log lines (one when a fault begins, one when it ends)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, write
from kvstore.errors import (
    ERRORS_BY_NAME,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from kvstore.node.storagewatch import StorageWatch
from kvstore.rpc.status import rebuild_error, status_code, trailing_metadata
from kvstore.storage import engine
from kvstore.storage.engine import Storage

# What rocksdict 0.3.29 raises when the WAL append hits ENOSPC (seen on a full tmpfs).
ENOSPC = (
    "IO error: No space left on device: While appending to file: /d/000004.log:"
    " No space left on device"
)


def state(value: bytes) -> KeyState:
    return write(EMPTY, EMPTY_CLOCK, "a/1", value, 1)[0]


class BrokenDisk:
    """The database, its writes failing with `message` while `failing`."""

    def __init__(self, db: Any, message: str) -> None:
        self._db = db
        self.message = message
        self.failing = True
        self.writes = 0

    def write(self, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        if self.failing:
            raise Exception(self.message)
        return self._db.write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (ENOSPC, StorageFull),
        ("IO error: Input/output error: While appending to file: x.log", StorageUnavailable),
        ("IO error: Writer has previous error.", StorageUnavailable),
    ],
)
def test_an_os_refusal_is_a_typed_fault(message: str, expected: type[StorageError]) -> None:
    fault = engine._fault(Exception(message))
    assert type(fault) is expected
    assert message in str(fault)


def test_other_failures_are_no_fault() -> None:
    assert engine._fault(Exception("Corruption: block checksum mismatch")) is None
    assert engine._fault(Exception("Invalid argument: Column family not found")) is None


def test_full_disk_message_says_what_to_expect() -> None:
    fault = engine._fault(Exception(ENOSPC))
    assert "disk is full: writes refused until space returns" in str(fault)


def test_storage_faults_travel_as_unavailable_and_come_back_typed() -> None:
    for error in (StorageFull("full"), StorageUnavailable("io")):
        assert isinstance(error, StorageError)
        assert status_code(error) == grpc.StatusCode.UNAVAILABLE
        name = dict(trailing_metadata(error))["kvstore-error"]
        rebuilt = rebuild_error("UNAVAILABLE", name, str(error))
        assert type(rebuilt) is type(error) and str(rebuilt) == str(error)
    assert ERRORS_BY_NAME["StorageFull"] is StorageFull


def test_a_refused_write_starts_a_fault_and_resume_ends_it(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        storage.merge(b"before", state(b"kept"))
        disk = BrokenDisk(storage._db, ENOSPC)
        storage._db = disk  # type: ignore[assignment]
        told: list[StorageError | None] = []
        faults: list[int] = []
        storage.on_fault = lambda: faults.append(1)

        storage.stage_merge(b"staged", state(b"lost"))
        storage.when_committed(told.append)
        with pytest.raises(StorageFull, match="disk is full"):
            storage.commit()
        assert len(told) == 1 and isinstance(told[0], StorageFull)
        assert faults == [1] and isinstance(storage.fault, StorageFull)

        # In the fault: every kind of write refused at once, RocksDB not even asked.
        with pytest.raises(StorageFull):
            storage.merge(b"other", state(b"v"))
        with pytest.raises(StorageFull):
            storage.save_cluster(b"cluster")
        with pytest.raises(StorageFull):
            storage.store_hint("t:1", b"k", state(b"v"), 1, 1 << 20)
        assert storage.hint_count == 0
        assert disk.writes == 1 and faults == [1]
        # Reads go on, and see nothing of what was refused.
        assert storage.get(b"before") == state(b"kept")
        assert storage.get(b"staged") is None and storage.get(b"other") is None

        disk.failing = False
        assert storage.try_resume()
        assert storage.fault is None
        storage.merge(b"after", state(b"new"))
        assert storage.get(b"after") == state(b"new")
        assert storage.get(b"before") == state(b"kept")
        assert storage.get(b"staged") is None


def test_resume_waits_for_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Storage(tmp_path / "db") as storage:
        storage.merge(b"k", state(b"v"))
        disk = BrokenDisk(storage._db, ENOSPC)
        storage._db = disk  # type: ignore[assignment]
        with pytest.raises(StorageFull):
            storage.merge(b"x", state(b"v"))

        def no_room(*_: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", no_room)
        assert not storage.try_resume()
        # Still the same handle: reads keep working while the disk is full.
        assert storage._db is disk  # type: ignore[comparison-overlap]
        assert storage.get(b"k") == state(b"v")
        assert not (storage.path / engine._SPACE_PROBE).exists()
        monkeypatch.undo()
        assert storage.try_resume()
        storage.merge(b"x", state(b"v"))


def test_other_write_failures_stay_storage_errors(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        disk = BrokenDisk(storage._db, "Corruption: bad batch")
        storage._db = disk  # type: ignore[assignment]
        with pytest.raises(StorageError) as raised:
            storage.merge(b"k", state(b"v"))
        assert not isinstance(raised.value, StorageUnavailable)
        assert storage.fault is None
        disk.failing = False
        storage.merge(b"k", state(b"v"))


def test_watch_reports_once_per_fault_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kvstore.node.storagewatch")
    with Storage(tmp_path / "db") as storage:
        counters: Counter[str] = Counter()
        reports: list[bool] = []

        async def report(writable: bool) -> None:
            reports.append(writable)

        disk = BrokenDisk(storage._db, ENOSPC)
        storage._db = disk  # type: ignore[assignment]

        async def scenario() -> None:
            watch = StorageWatch(storage, counters, report, interval_s=0.02)
            task = asyncio.create_task(watch.run())
            await asyncio.sleep(0)
            assert counters["storage_fault"] == 0
            for i in range(20):  # many refused writes: one report, one log line
                with pytest.raises(StorageFull):
                    storage.merge(f"k{i}".encode(), state(b"v"))
            for _ in range(100):  # bounded: the watch wakes at once
                if reports:
                    break
                await asyncio.sleep(0.01)
            assert reports == [False] and counters["storage_fault"] == 1
            await asyncio.sleep(0.1)  # probes fail meanwhile (the disk still refuses)
            disk.failing = False
            for _ in range(200):
                if len(reports) == 2:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        # This disk has room, so a real probe would reopen a healthy database at once: while
        # `disk` fails, the probe must fail too.
        original = storage.try_resume

        def resume() -> bool:
            if disk.failing:
                return False
            return original()

        storage.try_resume = resume  # type: ignore[method-assign]
        asyncio.run(scenario())
        assert reports == [False, True]
        assert counters["storage_fault"] == 0
        assert counters["storage_faults"] == 1 and counters["storage_resumes"] == 1
        lines = [r.getMessage() for r in caplog.records if r.name == "kvstore.node.storagewatch"]
        assert len(lines) == 2, lines
        assert "writes refused" in lines[0] and "fault over" in lines[1]
        assert storage.on_fault is None
        storage.merge(b"after", state(b"v"))


def test_resume_while_an_old_iterator_holds_the_database(tmp_path: Path) -> None:
    """A scan still open on the old handle keeps RocksDB's lock: the reopen fails, reads go
    on from a read-only handle, and a later probe (the scan finished) resumes."""
    with Storage(tmp_path / "db") as storage:
        for i in range(3):
            storage.merge(f"k{i}".encode(), state(b"v"))
        disk = BrokenDisk(storage._db, ENOSPC)
        storage._db = disk  # type: ignore[assignment]
        with pytest.raises(StorageFull):
            storage.merge(b"x", state(b"v"))
        scan = storage.items()
        assert next(scan)[1] == state(b"v")
        assert not storage.try_resume()
        assert storage.get(b"k1") == state(b"v")
        with pytest.raises(StorageFull):
            storage.merge(b"x", state(b"v"))
        assert len(list(scan)) == 2  # the old scan still reads to its end
        del scan
        assert storage.try_resume()
        storage.merge(b"x", state(b"v"))
        assert storage.get(b"x") == state(b"v")

"""RocksDB storage for one node: the only module that imports rocksdict.

Column families:
  data  ring position (8 bytes, big-endian murmur3) + key  ->  KeyRecord
  hints ring position + key length (4 bytes) + key + target address  ->  HintRecord
        (states a fallback keeps for a primary; all hints of one key are one key range)
  meta  node identity (node id, actor id), the last cluster state (members, ring), and
        "purged:" + data key -> purge time + the tombstone a purge deleted (for a while)

Data keys are prefixed by their ring position so a partition is one contiguous key range,
whatever Q is: anti-entropy and ownership handoff scan ranges instead of the whole store.

Writes go through the WAL, so an acknowledged write survives `kill -9` of the process;
`sync=True` also fsyncs the WAL on every write (survives power loss).

Group commit: a data write may be *staged* (`stage`, `stage_merge`) and made durable later,
together with every other write staged meanwhile, by one `commit`: one WriteBatch, one WAL
record and, with `sync=True`, one fsync for all of them. The next change of a key builds on
its staged state (the read-merge-write stays atomic); reads (`get`, `held`, scans) see only
what is committed. Whoever staged a write learns through `when_committed` that it is
durable, or that the commit failed and nothing of it was stored. The plain methods
(`update`, `merge`, `merge_many`, ...) stage and commit in one call; any direct write
commits what is staged first, so writes keep their order.

Storage faults: when RocksDB fails a write because the OS refused it (a full disk, an IO
error), the storage enters a fault: every write is refused with StorageFull /
StorageUnavailable (nothing of it stored, so nothing of it acknowledged), reads go on.
RocksDB then refuses every write, even once space is back, until the database is reopened
(rocksdict does not expose DB::Resume): `try_resume`, which the node calls about once a
second while the fault lasts, reopens it in-process once the disk has room again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import cast

import rocksdict

from kvstore import _native
from kvstore.core.ring import RoutedKey
from kvstore.core.versions import KeyState, merge
from kvstore.errors import (
    ConfigError,
    HintsFull,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from kvstore.storage.codec import DecodedHint as Hint
from kvstore.storage.codec import decode_hint, decode_record, encode_hint, encode_record

COLUMN_FAMILIES = ("data", "hints", "meta")
_POSITION = struct.Struct(">Q")
_KEY_LENGTH = struct.Struct(">I")
_META_NODE_ID = b"node_id"
_META_ACTOR = b"actor"
_META_CLUSTER = b"cluster"
# Purge markers: the tombstone a purge deleted, by data key, with the purge time.
_PURGED = b"purged:"
_PURGED_AT = struct.Struct(">Q")

# rocksdict raises a plain Exception carrying RocksDB's Status text. An OS refusal reads
# (rocksdict 0.3.29, ENOSPC on the WAL): "IO error: No space left on device: While appending
# to file: <dir>/000004.log: No space left on device"; every later write repeats it, also
# once space is back, and close() then says "IO error: Writer has previous error.".
_IO_ERROR = "IO error"
_NO_SPACE = "No space left on device"
# Room a reopen needs besides the WAL it replays into a table file: the new WAL, MANIFEST
# and OPTIONS files. Asked of the filesystem before the database is closed, so a disk that
# is still full keeps the open handle (and its reads) rather than losing it.
_RESUME_HEADROOM = 1 << 20
_SPACE_PROBE = "kvstore-space-probe"


# A key, or a key with its ring position already computed (hashed once per request).
Key = bytes | RoutedKey


def _split(key: Key) -> tuple[bytes, int]:
    if isinstance(key, RoutedKey):
        return key.key, key.position
    return key, _native.hash_key(key)


def data_key(key: Key) -> bytes:
    raw, position = _split(key)
    return _POSITION.pack(position) + raw


def position_of(storage_key: bytes) -> int:
    position: int = _POSITION.unpack_from(storage_key)[0]
    return position


def _hint_prefix(key: Key) -> bytes:
    raw, position = _split(key)
    return _POSITION.pack(position) + _KEY_LENGTH.pack(len(raw)) + raw


def _fault(exc: Exception) -> StorageUnavailable | None:
    """The fault a failed RocksDB write stands for, or None for a failure of another kind
    (a bug, a corrupt batch: not something waiting can cure)."""
    text = str(exc)
    if _NO_SPACE in text:
        return StorageFull(f"node's disk is full: writes refused until space returns ({text})")
    if text.startswith(_IO_ERROR):
        return StorageUnavailable(
            f"node's storage failed a write: writes refused until it recovers ({text})"
        )
    return None


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    return options


# What `Storage.stats` reports: its name -> the RocksDB property read for it.
_STAT_PROPERTIES = {
    "live_data_bytes": "rocksdb.estimate-live-data-size",
    "sst_files_bytes": "rocksdb.total-sst-files-size",
    "memtable_bytes": "rocksdb.cur-size-all-mem-tables",
    "estimated_keys": "rocksdb.estimate-num-keys",
    "pending_compaction_bytes": "rocksdb.estimate-pending-compaction-bytes",
}


class Storage:
    """A node's durable state. Every method is synchronous and fast; callers on the event loop
    call it inline. `update` is atomic per key: the read, the merge and the write happen under
    one lock with no await in between."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = False) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        # The fault writes are refused for (None: writable), and who to tell when one starts.
        self._fault: StorageUnavailable | None = None
        self.on_fault: Callable[[], None] | None = None
        try:
            self._open()
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise StorageError(f"cannot open RocksDB at {self.path}: {exc}") from exc
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = sync
        # Group commit: data key -> (state, encoding) staged for the next commit, and who
        # waits for that commit.
        self._staged: dict[bytes, tuple[KeyState, bytes]] = {}
        self._committed_callbacks: list[Callable[[StorageError | None], None]] = []
        self.commits = 0  # WriteBatches written by `commit` (tests count group commits)
        self._lock = threading.RLock()
        self._closed = False
        # Totals of the hints column family, kept in step with every change to it.
        self.hint_count = 0
        self.hint_bytes = 0
        for hint_key, raw in self._hints.items():
            self.hint_count += 1
            self.hint_bytes += len(cast(bytes, hint_key)) + len(cast(bytes, raw))

    def _open(self, read_only: bool = False) -> None:
        access = (
            rocksdict.AccessType.read_only(False)
            if read_only
            else rocksdict.AccessType.read_write()
        )
        self._db = rocksdict.Rdict(
            str(self.path),
            _options(),
            column_families={name: rocksdict.Options(raw_mode=True) for name in COLUMN_FAMILIES},
            access_type=access,
        )
        self._data = self._db.get_column_family("data")
        self._hints = self._db.get_column_family("hints")
        self._meta = self._db.get_column_family("meta")
        self._data_handle = self._db.get_column_family_handle("data")
        self._meta_handle = self._db.get_column_family_handle("meta")

    def _close_db(self) -> None:
        # Column-family handles hold the database open: release them before closing it.
        for name in ("_data", "_hints", "_meta", "_data_handle", "_meta_handle"):
            self.__dict__.pop(name, None)
        db = self.__dict__.pop("_db", None)
        if db is not None:
            try:
                db.close()
            except Exception:
                # A database in a fault says so again on close ("Writer has previous
                # error"), and is closed all the same.
                if self._fault is None:
                    raise

    # ---- storage faults ----

    @property
    def fault(self) -> StorageUnavailable | None:
        """Why writes are refused now, or None while the storage takes writes."""
        return self._fault

    def _write(self, write: Callable[[], object]) -> None:
        """Run one RocksDB write; a write the OS refused starts a fault (see the module's
        doc). Raises StorageFull / StorageUnavailable in a fault, StorageError otherwise."""
        if self._fault is not None:
            # A fresh error each time: one instance raised again and again would grow its
            # traceback with every request.
            raise type(self._fault)(str(self._fault))
        try:
            write()
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            fault = _fault(exc)
            if fault is None:
                raise StorageError(f"write to RocksDB failed: {exc}") from exc
            self._fault = fault
            if self.on_fault is not None:
                self.on_fault()
            raise type(fault)(str(fault)) from exc

    def _has_room(self) -> bool:
        """Whether the filesystem has room for a reopen: the WAL's size plus headroom,
        allocated for real (a free-space figure can promise blocks a quota refuses)."""
        need = _RESUME_HEADROOM + sum(
            wal.stat().st_size for wal in self.path.glob("*.log") if wal.is_file()
        )
        probe = self.path / _SPACE_PROBE
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, need)
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def try_resume(self) -> bool:
        """End a fault if the storage can write again: True once it takes writes. Reopens
        the database in-process (what it replays from the WAL is every write it
        acknowledged); while the disk has no room, does nothing and keeps the reads."""
        with self._lock:
            if self._fault is None:
                return True
            if self._closed or not self._has_room():
                return False
            self._close_db()
            try:
                self._open()
            except Exception:
                # Still refused (the room went meanwhile, or an iterator of the old handle
                # still holds its lock): reads go on from a read-only handle, and the next
                # probe tries again.
                with contextlib.suppress(Exception):
                    self._open(read_only=True)
                return False
            self._fault = None
            return True

    # ---- identity ----

    def claim_identity(self, node_id: str) -> str:
        """Bind this data directory to `node_id` and return the node's actor id.

        The actor id (node id + a random epoch made when the directory is first used) names
        the node in version vectors. A wiped directory gets a new epoch, so the node can never
        reissue a dot it made before the wipe. Opening a directory with another node id fails.
        """
        stored = self._meta.get(_META_NODE_ID)
        if stored is None:
            actor = f"{node_id}/{secrets.token_hex(4)}"
            self._write(
                lambda: self._meta.put(
                    _META_NODE_ID, node_id.encode(), write_opt=self._sync_options()
                )
            )
            self._write(
                lambda: self._meta.put(_META_ACTOR, actor.encode(), write_opt=self._sync_options())
            )
            return actor
        if stored.decode() != node_id:
            raise ConfigError(
                f"data directory {self.path} belongs to node {stored.decode()!r}, not {node_id!r}"
            )
        actor_bytes = self._meta.get(_META_ACTOR)
        if actor_bytes is None:
            raise StorageError(f"data directory {self.path} has a node id but no actor id")
        return bytes(actor_bytes).decode()

    def load_cluster(self) -> bytes | None:
        raw = self._meta.get(_META_CLUSTER)
        return None if raw is None else bytes(raw)

    def save_cluster(self, encoded: bytes) -> None:
        """The node's last cluster state (members and ring), so a restart keeps them."""
        self._write(lambda: self._meta.put(_META_CLUSTER, encoded, write_opt=self._sync_options()))

    def _sync_options(self) -> rocksdict.WriteOptions:
        options = rocksdict.WriteOptions()
        options.sync = True
        return options

    # ---- data ----

    def get(self, key: Key) -> KeyState | None:
        """The key's durable state: a staged change is not seen until it is committed (a
        write's dot must not reach another node before it is durable here, or a failed
        commit would let the next write take the same dot)."""
        raw = self._data.get(data_key(key))
        return None if raw is None else decode_record(raw)

    def get_encoded(self, key: Key) -> bytes | None:
        """`get`'s record as stored (a KeyRecord), not decoded: what a replica read ships."""
        raw = self._data.get(data_key(key))
        return None if raw is None else bytes(raw)

    def update(self, key: Key, change: Callable[[KeyState | None], KeyState]) -> KeyState:
        """Atomically replace the key's state by `change(current)`. If `change` raises, nothing
        is written. Returns the stored state."""
        with self._lock:
            new = self.stage(key, change)[0]
            self.commit()
            return new

    def apply(
        self, key: Key, change: Callable[[KeyState | None], KeyState]
    ) -> tuple[KeyState, bytes]:
        """`update`, returning the stored state with its encoding (a KeyRecord): the bytes a
        coordinator ships to the other replicas, encoded once."""
        with self._lock:
            new, raw = self.stage(key, change)
            self.commit()
            return new, raw

    # ---- group commit ----

    def stage(
        self, key: Key, change: Callable[[KeyState | None], KeyState]
    ) -> tuple[KeyState, bytes]:
        """Replace the key's state by `change(current)` for the next commit, atomically (no
        other change of the key comes between the read and the write). If `change` raises,
        nothing is staged. Returns the new state and its encoding (a KeyRecord)."""
        dk = data_key(key)
        with self._lock:
            staged = self._staged.get(dk)
            current = staged[0] if staged is not None else self._current(dk)
            new = change(current)
            if new == current:
                if staged is not None:
                    return staged
                return new, encode_record(new)
            raw = encode_record(new)
            self._staged[dk] = (new, raw)
            return new, raw

    def stage_merge(self, key: Key, incoming: KeyState) -> KeyState:
        """Merge a replica state into ours, staged (see `merge`)."""
        return self.stage(
            key, lambda current: incoming if current is None else merge(current, incoming)
        )[0]

    def when_committed(self, callback: Callable[[StorageError | None], None]) -> None:
        """Call `callback` once everything staged now is durable (None), or when the commit
        that was to store it failed (the error: none of it was stored)."""
        self._committed_callbacks.append(callback)

    def commit(self) -> None:
        """Write every staged change in one WriteBatch; then tell those waiting. Raises
        StorageError (and tells them) when the write fails: nothing staged is stored."""
        with self._lock:
            staged, self._staged = self._staged, {}
            callbacks, self._committed_callbacks = self._committed_callbacks, []
            error: StorageError | None = None
            if staged:
                try:
                    batch = rocksdict.WriteBatch(raw_mode=True)
                    for dk, (_, raw) in staged.items():
                        batch.put(dk, raw, column_family=self._data_handle)
                    self._write(lambda: self._db.write(batch, write_opt=self._write_options))
                    self.commits += 1
                except StorageError as exc:
                    error = exc
                except Exception as exc:  # a handle lost in a failed reopen, say
                    # Those waiting must hear of it whatever failed: a callback never called
                    # would leave the group commit waiting for ever (every later write too).
                    error = StorageError(f"commit failed: {type(exc).__name__}: {exc}")
        for callback in callbacks:
            callback(error)
        if error is not None:
            raise error

    def held(self, key: Key) -> KeyState | None:
        """The data record, or the tombstone purged here lately (tombstone GC's view: a
        replica whose purge ran ahead of the others' still counts as holding it)."""
        return self._current(data_key(key))

    def _current(self, dk: bytes) -> KeyState | None:
        """The stored state; for a key whose tombstone was purged here lately, that
        tombstone (see `purge_tombstone`): new writes then take dots past the purged ones,
        and merges drop what it covers, as they would have before the purge."""
        raw = self._data.get(dk)
        if raw is not None:
            return decode_record(raw)
        marker = self._meta.get(_PURGED + dk)
        return None if marker is None else decode_record(bytes(marker)[_PURGED_AT.size :])

    def merge(self, key: Key, incoming: KeyState) -> KeyState:
        """Merge a replica state into ours (replication, repair, handoff). A state that a
        tombstone purged here covers is not stored (see `purge_tombstone`)."""
        return self.update(
            key, lambda current: incoming if current is None else merge(current, incoming)
        )

    def merge_many(self, items: Iterable[tuple[bytes, KeyState]]) -> None:
        """Merge many replica states in one atomic write (one WAL record)."""
        with self._lock:
            for key, incoming in items:
                self.stage_merge(key, incoming)
            self.commit()

    def items(self) -> Iterator[tuple[bytes, KeyState]]:
        """Every stored key and its state, in ring order."""
        for dk, raw in self._data.items():
            yield cast(bytes, dk)[_POSITION.size :], decode_record(cast(bytes, raw))

    def has_data(self) -> bool:
        """Whether the data column family holds any key (a leaving node waits for none)."""
        it = self._data.iter()
        it.seek_to_first()
        return bool(it.valid())

    def scan(self, low: int, high: int, after: bytes = b"") -> Iterator[tuple[bytes, bytes, bytes]]:
        """(storage key, key, encoded record) of every key whose ring position is in
        [low, high), in storage order, starting after the storage key `after`.

        A partition is one such range. Records are yielded encoded: anti-entropy hashes
        them as stored and ownership handoff ships them without decoding.
        """
        start = max(_POSITION.pack(low), after + b"\0") if after else _POSITION.pack(low)
        for dk, raw in self._data.items(from_key=start):
            dk = cast(bytes, dk)
            if position_of(dk) >= high:
                return
            yield dk, dk[_POSITION.size :], cast(bytes, raw)

    def delete_if_unchanged(self, key: Key, expected: KeyState) -> bool:
        """Delete the key if its state is still `expected` (a state handed off to its owners,
        or a tombstone every replica holds). False, and nothing deleted, otherwise."""
        dk = data_key(key)
        with self._lock:
            self.commit()
            raw = self._data.get(dk)
            if raw is None or decode_record(raw) != expected:
                return False
            self._write(lambda: self._data.delete(dk, write_opt=self._write_options))
            return True

    # ---- tombstone purges ----

    def purge_tombstone(self, key: Key, expected: KeyState, now_ms: int) -> bool:
        """Delete the key if its state is still the tombstone `expected`, and remember that
        tombstone for a while: a copy of an older version still in flight when every
        replica purged (an anti-entropy page read before, a handoff page, a repair) would
        otherwise land on a key with nothing to cover it and bring the value back. Until
        `forget_purges` removes it, the remembered tombstone stands in for the missing
        record in writes and merges (`_current`): what it covers merges into it and is not
        stored (the result equals it), anything newer is stored merged with it."""
        dk = data_key(key)
        with self._lock:
            self.commit()
            raw = self._data.get(dk)
            if raw is None:
                return self._current(dk) == expected  # purged here already
            if decode_record(raw) != expected:
                return False
            batch = rocksdict.WriteBatch(raw_mode=True)
            batch.delete(dk, column_family=self._data_handle)
            batch.put(
                _PURGED + dk,
                _PURGED_AT.pack(now_ms) + encode_record(expected),
                column_family=self._meta_handle,
            )
            self._write(lambda: self._db.write(batch, write_opt=self._write_options))
            return True

    def forget_purges(self, before_ms: int) -> int:
        """Drop purge markers made before `before_ms`; returns how many."""
        old = []
        for marker_key, raw in self._meta.items(from_key=_PURGED):
            marker_key = cast(bytes, marker_key)
            if not marker_key.startswith(_PURGED):
                break
            if _PURGED_AT.unpack_from(cast(bytes, raw))[0] < before_ms:
                old.append(marker_key)
        if old:
            batch = rocksdict.WriteBatch(raw_mode=True)
            for marker_key in old:
                batch.delete(marker_key, column_family=self._meta_handle)
            with self._lock:
                self._write(lambda: self._db.write(batch, write_opt=self._write_options))
        return len(old)

    # ---- hints ----

    def store_hint(
        self, target: str, key: Key, state: KeyState, now_ms: int, max_bytes: int
    ) -> None:
        """Keep `state` for `target`, merged into any hint already held for it and the key
        (its age then starts again).

        Raises HintsFull, storing nothing, when the hints would pass `max_bytes` in all: the
        write then counts as failed on this fallback and the coordinator tries the next.
        """
        hint_key = _hint_prefix(key) + target.encode()
        with self._lock:
            old = self._hints.get(hint_key)
            if old is not None:
                state = merge(decode_hint(old).state, state)
            # The age runs from the newest write in the hint: a write acknowledged just now
            # must not be dropped with an old hint it was merged into.
            raw = encode_hint(target, _split(key)[0], state, now_ms)
            old_size = 0 if old is None else len(hint_key) + len(old)
            new_size = len(hint_key) + len(raw)
            if self.hint_bytes - old_size + new_size > max_bytes:
                raise HintsFull(
                    f"hints would take {self.hint_bytes - old_size + new_size} bytes; the"
                    f" limit is {max_bytes} (hint_max_bytes)"
                )
            self._write(lambda: self._hints.put(hint_key, raw, write_opt=self._write_options))
            self.hint_count += old is None
            self.hint_bytes += new_size - old_size

    def hints_for_key(self, key: Key) -> list[KeyState]:
        """The states fallbacks' hints hold for the key here (a sloppy read answers them)."""
        prefix = _hint_prefix(key)
        found = []
        for hint_key, raw in self._hints.items(from_key=prefix):
            if not cast(bytes, hint_key).startswith(prefix):
                break
            found.append(decode_hint(cast(bytes, raw)).state)
        return found

    def hints(self) -> Iterator[Hint]:
        """Every hint held, in ring order."""
        for _hint_key, raw in self._hints.items():
            yield decode_hint(cast(bytes, raw))

    def delete_hint(self, hint: Hint) -> bool:
        """Delete a hint if it is unchanged since it was read (delivered or dropped); a hint
        that grew meanwhile stays, to be delivered again."""
        hint_key = _hint_prefix(hint.key) + hint.target.encode()
        with self._lock:
            current = self._hints.get(hint_key)
            if current is None or bytes(current) != hint.raw:
                return False
            self._write(lambda: self._hints.delete(hint_key, write_opt=self._write_options))
            self.hint_count -= 1
            self.hint_bytes -= len(hint_key) + len(hint.raw)
            return True

    def stats(self) -> dict[str, int]:
        """RocksDB's own size statistics, summed over the column families, for the metrics
        endpoint: name -> value (bytes, or keys for `estimated_keys`). Empty once closed."""
        if self._closed or "_db" not in self.__dict__:
            return {}
        totals = dict.fromkeys(_STAT_PROPERTIES, 0)
        for family in (self._data, self._hints, self._meta):
            for name, prop in _STAT_PROPERTIES.items():
                value = family.property_int_value(prop)
                totals[name] += int(value) if value is not None else 0
        return totals

    def close(self) -> None:
        if not self._closed:
            if self._staged or self._committed_callbacks:
                # Those waiting are told of a failure; nothing staged was acknowledged.
                with contextlib.suppress(StorageError):
                    self.commit()
            self._closed = True
            self._close_db()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

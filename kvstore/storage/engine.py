"""RocksDB storage for one node: the only module that imports rocksdict.

Column families:
  data  ring position (8 bytes, big-endian murmur3) + key  ->  KeyRecord
  hints reserved for hinted handoff
  meta  node identity (node id, actor id) and later membership state

Data keys are prefixed by their ring position so a partition is one contiguous key range,
whatever Q is: anti-entropy and ownership handoff scan ranges instead of the whole store.

Writes go through the WAL, so an acknowledged write survives `kill -9` of the process;
`sync=True` also fsyncs the WAL on every write (survives power loss, costs ~40x).
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import rocksdict

from kvstore import _native
from kvstore.core.versions import KeyState, merge
from kvstore.errors import ConfigError, StorageError
from kvstore.storage.codec import decode_record, encode_record

COLUMN_FAMILIES = ("data", "hints", "meta")
_POSITION = struct.Struct(">Q")
_META_NODE_ID = b"node_id"
_META_ACTOR = b"actor"


def data_key(key: bytes) -> bytes:
    return _POSITION.pack(_native.hash_key(key)) + key


def _options() -> rocksdict.Options:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    return options


class Storage:
    """A node's durable state. Every method is synchronous and fast; callers on the event loop
    call it inline. `update` is atomic per key: the read, the merge and the write happen under
    one lock with no await in between."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = False) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = rocksdict.Rdict(
                str(self.path),
                _options(),
                column_families={
                    name: rocksdict.Options(raw_mode=True) for name in COLUMN_FAMILIES
                },
            )
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise StorageError(f"cannot open RocksDB at {self.path}: {exc}") from exc
        self._data = self._db.get_column_family("data")
        self._meta = self._db.get_column_family("meta")
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = sync
        self._lock = threading.Lock()
        self._closed = False

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
            self._meta.put(_META_NODE_ID, node_id.encode(), write_opt=self._sync_options())
            self._meta.put(_META_ACTOR, actor.encode(), write_opt=self._sync_options())
            return actor
        if stored.decode() != node_id:
            raise ConfigError(
                f"data directory {self.path} belongs to node {stored.decode()!r}, not {node_id!r}"
            )
        actor_bytes = self._meta.get(_META_ACTOR)
        if actor_bytes is None:
            raise StorageError(f"data directory {self.path} has a node id but no actor id")
        return bytes(actor_bytes).decode()

    def _sync_options(self) -> rocksdict.WriteOptions:
        options = rocksdict.WriteOptions()
        options.sync = True
        return options

    # ---- data ----

    def get(self, key: bytes) -> KeyState | None:
        raw = self._data.get(data_key(key))
        return None if raw is None else decode_record(raw)

    def update(self, key: bytes, change: Callable[[KeyState | None], KeyState]) -> KeyState:
        """Atomically replace the key's state by `change(current)`. If `change` raises, nothing
        is written. Returns the stored state."""
        dk = data_key(key)
        with self._lock:
            raw = self._data.get(dk)
            current = None if raw is None else decode_record(raw)
            new = change(current)
            if new != current:
                self._data.put(dk, encode_record(new), write_opt=self._write_options)
            return new

    def merge(self, key: bytes, incoming: KeyState) -> KeyState:
        """Merge a replica state into ours (replication, repair, handoff)."""
        return self.update(
            key, lambda current: incoming if current is None else merge(current, incoming)
        )

    def items(self) -> Iterator[tuple[bytes, KeyState]]:
        """Every stored key and its state, in ring order."""
        for dk, raw in self._data.items():
            yield cast(bytes, dk)[_POSITION.size :], decode_record(cast(bytes, raw))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Column-family handles hold the database open: release them before closing it.
            del self._data, self._meta
            self._db.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

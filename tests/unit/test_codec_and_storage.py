"""Record and context encodings; storage identity and durability across kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore._native import hash_key
from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.versions import EMPTY, write
from kvstore.errors import ConfigError, InvalidContext, StorageError
from kvstore.storage.codec import (
    decode_context,
    decode_record,
    encode_context,
    encode_record,
    state_from_proto,
    state_to_proto,
)
from kvstore.storage.engine import Storage


def sample_state():  # type: ignore[no-untyped-def]
    s, _ = write(EMPTY, {}, "a/1", b"x", 123)
    s, _ = write(s, {}, "b/2", None, 456)
    s, _ = write(s, {}, "b/2", b"", 789)  # an empty value is a value, not a tombstone
    return s


def test_record_round_trip() -> None:
    state = sample_state()
    assert decode_record(encode_record(state)) == state
    assert state_from_proto(state_to_proto(state)) == state
    decoded = decode_record(encode_record(state))
    assert [s.timestamp_ms for s in decoded.siblings] == [123, 456, 789]
    assert decoded.live_values == [b"x", b""]


@pytest.mark.parametrize(
    "record",
    [
        pb.KeyRecord(format=2),
        pb.KeyRecord(format=1, vector=[pb.VectorEntry(actor="a", counter=1)] * 2),
        pb.KeyRecord(format=1, siblings=[pb.Sibling(dot_actor="a", dot_counter=1)]),  # uncovered
        pb.KeyRecord(
            format=1,
            vector=[pb.VectorEntry(actor="a", counter=1)],
            siblings=[pb.Sibling(dot_actor="a", dot_counter=1)] * 2,
        ),
    ],
)
def test_records_that_break_the_rules_are_refused(record: pb.KeyRecord) -> None:
    with pytest.raises(StorageError):
        decode_record(record.SerializeToString())


def test_garbage_record_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        decode_record(b"\xff\xff\xff")


def test_context_round_trip_and_empty() -> None:
    vector = {"a/1": 3, "b/2": 1}
    assert decode_context(encode_context(vector, b"k"), b"k") == vector
    assert decode_context(b"", b"k") == {}
    assert encode_context({}, b"k") == b""


def test_a_context_is_only_valid_for_its_own_key() -> None:
    context = encode_context({"a/1": 2}, b"one key")
    with pytest.raises(InvalidContext, match="another key"):
        decode_context(context, b"another key")


def context_bytes(*entries: tuple[str, int], format: int = 1) -> bytes:
    vector = [pb.VectorEntry(actor=a, counter=c) for a, c in entries]
    position = hash_key(b"k")
    return pb.CausalContext(format=format, vector=vector, key_position=position).SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe garbage",
        context_bytes(format=9),
        context_bytes(("", 1)),
        context_bytes(("a", 0)),
        context_bytes(("a", 1), ("a", 1)),
    ],
)
def test_bad_contexts_are_invalid_context(data: bytes) -> None:
    with pytest.raises(InvalidContext):
        decode_context(data, b"k")


def test_storage_round_trip_and_failed_update_writes_nothing(tmp_path: Path) -> None:
    with Storage(tmp_path) as storage:
        actor = storage.claim_identity("n1")
        assert storage.get(b"k") is None
        stored = storage.update(b"k", lambda cur: write(cur or EMPTY, {}, actor, b"v")[0])
        assert storage.get(b"k") == stored

        def explode(current):  # type: ignore[no-untyped-def]
            raise RuntimeError("refused")

        with pytest.raises(RuntimeError):
            storage.update(b"k", explode)
        with pytest.raises(RuntimeError):
            storage.update(b"new", explode)
        assert storage.get(b"k") == stored and storage.get(b"new") is None

        other, _ = write(EMPTY, {}, "other/1", b"w")
        merged = storage.merge(b"k", other)
        assert sorted(merged.live_values) == [b"v", b"w"]
        assert dict(storage.items()) == {b"k": merged}


def test_identity_is_kept_bound_and_renewed_after_a_wipe(tmp_path: Path) -> None:
    with Storage(tmp_path / "d") as storage:
        actor = storage.claim_identity("n1")
    with Storage(tmp_path / "d") as storage:
        assert storage.claim_identity("n1") == actor
        with pytest.raises(ConfigError):
            storage.claim_identity("n2")
    with Storage(tmp_path / "wiped") as storage:
        fresh = storage.claim_identity("n1")
    assert fresh != actor and fresh.startswith("n1/")


WRITER = """
import sys
from kvstore.core.versions import EMPTY, write
from kvstore.storage.engine import Storage
storage = Storage(sys.argv[1], sync=sys.argv[2] == "sync")
actor = storage.claim_identity("n1")
for i in range(500):
    storage.update(b"key-%d" % i, lambda cur, i=i: write(cur or EMPTY, {}, actor, b"v-%d" % i)[0])
print("done", flush=True)
import time
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["wal", "sync"])
def test_acknowledged_writes_survive_kill_9(tmp_path: Path, mode: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "done"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    with Storage(tmp_path) as storage:
        for i in range(500):
            state = storage.get(b"key-%d" % i)
            assert state is not None and state.live_values == [b"v-%d" % i]

"""kvstore.storage.engine.Storage on a real RocksDB in a temporary directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, merge, write
from kvstore.errors import ConfigError, StorageError
from kvstore.storage.engine import Storage, data_key

REPO = Path(__file__).resolve().parents[2]


def put(storage: Storage, key: bytes, value: bytes | None, actor: str = "n1/x") -> KeyState:
    def change(current: KeyState | None) -> KeyState:
        state = current or EMPTY
        new, _ = write(state, state.clock, actor, value)
        return new

    return storage.update(key, change)


def test_get_of_a_missing_key_is_none(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        assert storage.get(b"nope") is None


def test_update_get_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Storage(path) as storage:
        seen: list[KeyState | None] = []

        def change(current: KeyState | None) -> KeyState:
            seen.append(current)
            new, _ = write(current or EMPTY, EMPTY_CLOCK, "n1/x", b"v1", 99)
            return new

        stored = storage.update(b"k", change)
        assert seen == [None]
        assert storage.get(b"k") == stored
        assert stored.live_values == [b"v1"]
        second = put(storage, b"k", b"v2")
        assert storage.get(b"k") == second
        assert second.live_values == [b"v2"]
    with Storage(path) as storage:
        again = storage.get(b"k")
        assert again == second
        assert again is not None and again.siblings[0].timestamp_ms == 0
    with Storage(path) as storage:
        assert storage.get(b"k") == second


def test_update_passes_the_current_state_to_change(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        first = put(storage, b"k", b"a")
        seen: list[KeyState | None] = []

        def change(current: KeyState | None) -> KeyState:
            seen.append(current)
            assert current is not None
            return current

        assert storage.update(b"k", change) == first
        assert seen == [first]


def test_merge_round_trip(tmp_path: Path) -> None:
    a, _ = write(EMPTY, EMPTY_CLOCK, "a/1", b"x")
    b, _ = write(EMPTY, EMPTY_CLOCK, "b/1", b"y")
    with Storage(tmp_path / "db") as storage:
        assert storage.merge(b"k", a) == a  # into nothing: stored as is
        assert storage.get(b"k") == a
        merged = storage.merge(b"k", b)
        assert merged == merge(a, b)
        assert storage.get(b"k") == merged
        assert storage.merge(b"k", a) == merged  # replaying is harmless
        assert sorted(merged.live_values) == [b"x", b"y"]


class Boom(Exception):
    pass


def test_update_whose_change_raises_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Storage(path) as storage:
        before = put(storage, b"existing", b"v")

        def explode(current: KeyState | None) -> KeyState:
            raise Boom

        with pytest.raises(Boom):
            storage.update(b"existing", explode)
        with pytest.raises(Boom):
            storage.update(b"fresh", explode)
        assert storage.get(b"existing") == before
        assert storage.get(b"fresh") is None
        assert [k for k, _ in storage.items()] == [b"existing"]
        # The lock was released: later updates still work.
        assert put(storage, b"fresh", b"w").live_values == [b"w"]
    with Storage(path) as storage:
        assert storage.get(b"existing") == before


def test_concurrent_updates_of_one_key_lose_no_write(tmp_path: Path) -> None:
    writers, writes_each = 8, 60
    with Storage(tmp_path / "db") as storage:
        actor = storage.claim_identity("atomic")
        barrier = threading.Barrier(writers)

        def blind_writes(worker: int) -> None:
            barrier.wait()
            for i in range(writes_each):
                value = b"%d-%d" % (worker, i)
                storage.update(
                    b"hot", lambda cur, v=value: write(cur or EMPTY, EMPTY_CLOCK, actor, v)[0]
                )

        threads = [threading.Thread(target=blind_writes, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        state = storage.get(b"hot")
        assert state is not None
        # Blind writes never replace each other: every one must be a sibling, with its own dot.
        assert len(state.siblings) == writers * writes_each
        assert state.vector == {actor: writers * writes_each}


def test_items_returns_every_key_in_ring_order(tmp_path: Path) -> None:
    keys = [b"a", b"ab", b"abc", b"b", b"\x00", b"\xff" * 40, b"k" * 1024]
    keys += [b"key-%d" % i for i in range(200)]
    with Storage(tmp_path / "db") as storage:
        expected = {key: put(storage, key, key[::-1]) for key in keys}
        listed = list(storage.items())
        assert dict(listed) == expected
        assert len(listed) == len(keys)
        assert [data_key(k) for k, _ in listed] == sorted(data_key(k) for k in keys)


def test_data_key_is_the_ring_position_then_the_key() -> None:
    from kvstore._native import hash_key

    assert data_key(b"abc") == hash_key(b"abc").to_bytes(8, "big") + b"abc"


# ---- identity ----


def test_claim_identity_is_stable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Storage(path) as storage:
        actor = storage.claim_identity("node-1")
        assert actor.startswith("node-1/")
        assert len(actor) > len("node-1/")
        assert storage.claim_identity("node-1") == actor
    with Storage(path) as storage:
        assert storage.claim_identity("node-1") == actor


def test_claim_identity_refuses_another_node_id(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Storage(path) as storage:
        actor = storage.claim_identity("node-1")
    with Storage(path) as storage:
        with pytest.raises(ConfigError, match="node-1"):
            storage.claim_identity("node-2")
        assert storage.claim_identity("node-1") == actor  # nothing was changed


def test_a_wiped_directory_gets_a_new_actor(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Storage(path) as storage:
        first = storage.claim_identity("node-1")
    shutil.rmtree(path)
    with Storage(path) as storage:
        second = storage.claim_identity("node-1")
    assert second.startswith("node-1/")
    assert second != first


def test_separate_directories_get_separate_actors(tmp_path: Path) -> None:
    actors = set()
    for i in range(5):
        with Storage(tmp_path / f"db{i}") as storage:
            actors.add(storage.claim_identity("same-node"))
    assert len(actors) == 5


def test_opening_an_open_directory_twice_is_a_storage_error(tmp_path: Path) -> None:
    with Storage(tmp_path / "db"), pytest.raises(StorageError):
        Storage(tmp_path / "db")


def test_close_is_idempotent(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db")
    put(storage, b"k", b"v")
    storage.close()
    storage.close()
    with Storage(tmp_path / "db") as again:
        assert again.get(b"k") is not None


# ---- durability across kill -9 ----

WRITER = textwrap.dedent(
    """
    import sys, time
    from kvstore.core.versions import EMPTY, EMPTY_CLOCK, write
    from kvstore.storage.engine import Storage

    storage = Storage(sys.argv[1], sync=sys.argv[2] == "sync")
    storage.claim_identity("node-k")
    for i in range(500):
        key, value = b"key-%d" % i, b"v%d" % i
        storage.update(key, lambda cur, v=value: write(cur or EMPTY, EMPTY_CLOCK, "k/1", v)[0])
    print("done", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_acknowledged_updates_survive_kill_9(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "done":
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"writer did not finish: {line!r} {err}")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    with Storage(path) as storage:
        found = dict(storage.items())
        assert len(found) == 500
        for i in range(500):
            state = storage.get(b"key-%d" % i)
            assert state is not None
            assert state.live_values == [b"v%d" % i]
        assert storage.claim_identity("node-k").startswith("node-k/")


# ---- hints, scans, batches, cluster state ----


def state_of(value: bytes, actor: str = "n1/x") -> KeyState:
    return write(EMPTY, EMPTY_CLOCK, actor, value)[0]


def test_hints_merge_per_target_and_key_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    a, b = state_of(b"a"), state_of(b"b", "n2/y")
    with Storage(path) as storage:
        storage.store_hint("p1:1", b"k", a, now_ms=1_000, max_bytes=1 << 20)
        storage.store_hint("p1:1", b"k", b, now_ms=2_000, max_bytes=1 << 20)  # merged
        storage.store_hint("p2:1", b"k", a, now_ms=3_000, max_bytes=1 << 20)
        storage.store_hint("p1:1", b"k2", a, now_ms=4_000, max_bytes=1 << 20)
        assert storage.hint_count == 3
        assert sorted(s.live_values for s in storage.hints_for_key(b"k")) == [
            [b"a"],
            [b"a", b"b"],
        ]
        assert storage.hints_for_key(b"k3") == []
        assert storage.get(b"k") is None  # hints are not data
        size = storage.hint_bytes
    with Storage(path) as storage:
        assert (storage.hint_count, storage.hint_bytes) == (3, size)
        held = {(h.target, h.key): h for h in storage.hints()}
        first = held[("p1:1", b"k")]
        assert first.state == merge(a, b)
        assert first.stored_ms == 2_000  # the age counts from the newest write merged in


def test_a_hint_that_grew_after_it_was_read_is_not_deleted(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        storage.store_hint("p1:1", b"k", state_of(b"a"), now_ms=1, max_bytes=1 << 20)
        (read,) = list(storage.hints())
        storage.store_hint("p1:1", b"k", state_of(b"b", "n2/y"), now_ms=2, max_bytes=1 << 20)
        assert not storage.delete_hint(read)  # delivered the old one; the new must stay
        assert storage.hint_count == 1
        (again,) = list(storage.hints())
        assert storage.delete_hint(again)
        assert (storage.hint_count, storage.hint_bytes) == (0, 0)
        assert not storage.delete_hint(again)


def test_hints_refuse_to_pass_their_byte_limit_and_store_nothing(tmp_path: Path) -> None:
    from kvstore.errors import HintsFull

    with Storage(tmp_path / "db") as storage:
        storage.store_hint("p1:1", b"k", state_of(b"a"), now_ms=1, max_bytes=200)
        before = (storage.hint_count, storage.hint_bytes)
        with pytest.raises(HintsFull, match="hint_max_bytes"):
            storage.store_hint("p1:1", b"k2", state_of(b"x" * 300), now_ms=1, max_bytes=200)
        assert (storage.hint_count, storage.hint_bytes) == before
        assert storage.hints_for_key(b"k2") == []


def test_scan_yields_a_position_range_in_order_and_resumes_after_a_key(tmp_path: Path) -> None:
    from kvstore.storage.engine import position_of

    with Storage(tmp_path / "db") as storage:
        keys = [f"key-{i}".encode() for i in range(200)]
        for key in keys:
            put(storage, key, b"v")
        half = 1 << 63
        low = list(storage.scan(0, half))
        high = list(storage.scan(half, 1 << 64))
        assert len(low) + len(high) == 200
        assert all(position_of(dk) < half for dk, _, _ in low)
        assert all(position_of(dk) >= half for dk, _, _ in high)
        assert [dk for dk, _, _ in low] == sorted(dk for dk, _, _ in low)
        assert {k for _, k, _ in low + high} == set(keys)
        resumed = list(storage.scan(0, half, after=low[9][0]))
        assert resumed == low[10:]


def test_merge_many_and_delete_if_unchanged(tmp_path: Path) -> None:
    with Storage(tmp_path / "db") as storage:
        a, b = state_of(b"a"), state_of(b"b", "n2/y")
        storage.merge_many([(b"k1", a), (b"k2", a), (b"k1", b)])
        assert storage.get(b"k1") == merge(a, b)
        assert storage.get(b"k2") == a
        assert not storage.delete_if_unchanged(b"k1", a)  # it changed since
        assert storage.get(b"k1") == merge(a, b)
        assert storage.delete_if_unchanged(b"k2", a)
        assert storage.get(b"k2") is None
        assert not storage.delete_if_unchanged(b"k2", a)


def test_cluster_state_round_trip(tmp_path: Path) -> None:
    from kvstore.core.cluster import ClusterView, Member, MemberStatus, RingLayout, RingState
    from kvstore.storage.codec import decode_cluster, encode_cluster

    view = ClusterView(
        members={"a:1": Member("a:1", "a", MemberStatus.LEAVING, 5, 9, 2)},
        ring=RingState(3, RingLayout(("a:1", "b:1"), (0, 1, 0, 1)), RingLayout(("b:1",), (0,) * 4)),
        partitions=4,
        n=2,
    )
    with Storage(tmp_path / "db") as storage:
        assert storage.load_cluster() is None
        storage.save_cluster(encode_cluster(view))
    with Storage(tmp_path / "db") as storage:
        loaded = storage.load_cluster()
        assert loaded is not None
        assert decode_cluster(loaded) == view
    with pytest.raises(StorageError):
        decode_cluster(b"\xff\xff")


# ---- tombstone purges ----


def deleted(tmp_path: Path) -> tuple[Storage, KeyState, KeyState]:
    """A store holding a tombstone over `old`; returns (store, old, tombstone)."""
    storage = Storage(tmp_path / "db")
    old, _ = write(EMPTY, EMPTY_CLOCK, "a/1", b"old", timestamp_ms=1)
    tombstone, _ = write(old, old.clock, "a/1", None, timestamp_ms=2)
    storage.merge(b"k", tombstone)
    return storage, old, tombstone


def test_purge_deletes_only_the_expected_tombstone(tmp_path: Path) -> None:
    storage, old, tombstone = deleted(tmp_path)
    assert not storage.purge_tombstone(b"k", old, now_ms=10)  # not what is stored
    assert storage.get(b"k") == tombstone
    assert storage.purge_tombstone(b"k", tombstone, now_ms=10)
    assert storage.get(b"k") is None and not storage.has_data()


def test_an_old_copy_arriving_after_a_purge_does_not_come_back(tmp_path: Path) -> None:
    # The race this guards: an anti-entropy page read the old value from a replica just
    # before every replica purged the tombstone, and merges it after.
    storage, old, tombstone = deleted(tmp_path)
    assert storage.purge_tombstone(b"k", tombstone, now_ms=10)
    storage.merge(b"k", old)
    storage.merge_many([(b"k", old)])
    assert storage.get(b"k") is None
    # The tombstone itself changes nothing either; GC still sees it held, so a purge that
    # ran ahead here can be completed on the other replicas.
    storage.merge(b"k", tombstone)
    assert storage.get(b"k") is None and storage.held(b"k") == tombstone
    assert storage.purge_tombstone(b"k", tombstone, now_ms=11)
    # A newer write is no old copy: it is stored.
    newer, _ = write(EMPTY, EMPTY_CLOCK, "b/1", b"new", timestamp_ms=3)
    storage.merge(b"k", newer)
    assert storage.get(b"k") == merge(tombstone, newer)


def test_purge_markers_are_forgotten_after_their_time_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    storage, old, tombstone = deleted(tmp_path)
    assert storage.purge_tombstone(b"k", tombstone, now_ms=10)
    storage.close()
    storage = Storage(tmp_path / "db")
    storage.merge(b"k", old)
    assert storage.get(b"k") is None  # the marker is durable
    assert storage.forget_purges(before_ms=10) == 0
    assert storage.forget_purges(before_ms=11) == 1
    storage.merge(b"k", old)
    assert storage.get(b"k") == old  # without a marker, a copy is just a copy


def test_a_write_after_a_purge_takes_dots_past_the_purged_tombstone(tmp_path: Path) -> None:
    # The same actor writes again, with no context: its new dot must not be one the purged
    # tombstone covers, or replicas would drop it as an old copy.
    storage, _, tombstone = deleted(tmp_path)
    assert storage.purge_tombstone(b"k", tombstone, now_ms=10)
    assert storage.held(b"k") == tombstone and storage.get(b"k") is None
    new = storage.update(
        b"k", lambda current: write(current or EMPTY, EMPTY_CLOCK, "a/1", b"v2")[0]
    )
    assert new.found and new.vector["a/1"] > tombstone.vector["a/1"]
    assert storage.get(b"k") == new
    # A replica that purged too takes the new write.
    other = Storage(tmp_path / "other")
    other.merge(b"k", tombstone)
    assert other.purge_tombstone(b"k", tombstone, now_ms=10)
    other.merge(b"k", new)
    assert other.get(b"k") == new
    # A purge of the tombstone no longer held is refused; of one purged already, done.
    assert other.purge_tombstone(b"k", tombstone, now_ms=11) is False
    third = Storage(tmp_path / "third")
    third.merge(b"k", tombstone)
    assert third.purge_tombstone(b"k", tombstone, now_ms=10)
    assert third.purge_tombstone(b"k", tombstone, now_ms=12)

"""The request path in process: Coordinator + Replica + Router, built by the real
composition root over real storage, on a fake transport and a fake clock (tests/sim/fakes).
Quorums reached and missed, stand-ins with hints, forwarding, read repair, deadlines, and
the work done once per request. Time is fake: a test that waits out a 2 s deadline takes
milliseconds, and the elapsed fake time is asserted exactly where it is the point."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore import _native
from kvstore.core.requests import PutCommand
from kvstore.errors import StorageError, Unavailable
from kvstore.node.server import NodeParts
from kvstore.storage.codec import encode_record
from tests.sim.fakes import SimCluster, make_cluster, simulate

VALUE = b"value"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SimCluster]:
    # 4 members, N=3 R=2 W=2: every key has 3 primaries and 1 fallback.
    sim = make_cluster(tmp_path)
    yield sim
    sim.close()


def put(node: NodeParts, key: bytes, value: bytes | None = VALUE, **options: object):  # type: ignore[no-untyped-def]
    return node.coordinator.put(PutCommand(key, value, **options))  # type: ignore[arg-type]


def live(cluster: SimCluster, address: str, key: bytes) -> list[bytes]:
    state = cluster.stored(address, key)
    return [] if state is None else state.live_values


def any_key(cluster: SimCluster) -> tuple[bytes, list[str], str]:
    """A key, its primaries [a, b, c] and its fallback."""
    key = cluster.key_where(lambda preference: True)
    return key, cluster.primaries(key), cluster.fallbacks(key)[0]


# ---- quorum reached and missed ----


def test_a_put_reaches_its_quorum_and_every_primary(cluster: SimCluster) -> None:
    key, (a, b, c), fallback = any_key(cluster)

    async def scenario() -> None:
        answer = await put(cluster.node(a), key)
        assert answer.context and answer.values == ()
        await cluster.drain()
        read = await cluster.node(fallback).coordinator.get(key)
        assert read.values == (VALUE,) and read.found

    simulate(cluster.clock, scenario)
    assert [live(cluster, p, key) for p in (a, b, c)] == [[VALUE]] * 3
    assert cluster.stored(fallback, key) is None and cluster.hinted(fallback) == []
    merges = cluster.network.messages("merge")
    assert sorted(m.target for m in merges) == sorted([b, c])
    assert all(m.hint_for == "" for m in merges)


def test_the_client_is_answered_at_w_and_replication_goes_on(cluster: SimCluster) -> None:
    key, (a, _b, c), _ = any_key(cluster)
    # c takes 0.3 s, within replica_timeout (0.5 s): no stand-in is called for it.
    cluster.network.latency[c] = 0.3

    async def scenario() -> None:
        await put(cluster.node(a), key)
        assert cluster.clock.elapsed < 0.01  # answered at b's ack (w=2 with a's own write)
        assert live(cluster, c, key) == []
        await cluster.drain()
        assert live(cluster, c, key) == [VALUE]
        assert cluster.clock.elapsed == pytest.approx(0.3)

    simulate(cluster.clock, scenario)
    assert cluster.hinted(cluster.fallbacks(key)[0]) == []


def test_a_primary_slower_than_the_replica_timeout_is_stood_in_for(cluster: SimCluster) -> None:
    key, (a, _b, c), fallback = any_key(cluster)
    cluster.network.latency[c] = 1.0

    async def scenario() -> None:
        await put(cluster.node(a), key)
        await cluster.drain()
        # At 0.5 s c's place went to the fallback, which acknowledged: the replication was
        # complete then, and c's own call was stopped before it arrived.
        assert cluster.clock.elapsed == pytest.approx(0.501)

    simulate(cluster.clock, scenario)
    assert cluster.hinted(fallback) == [(c, key)]
    assert live(cluster, c, key) == []


def test_a_strict_put_without_its_quorum_fails_at_once(cluster: SimCluster) -> None:
    key, (a, b, c), fallback = any_key(cluster)
    cluster.network.refusing |= {b, c}

    async def scenario() -> None:
        with pytest.raises(Unavailable) as failure:
            await put(cluster.node(a), key, strict=True)
        assert failure.value.answered == 1 and failure.value.required == 2
        assert "too many replicas failed" in str(failure.value)
        assert "may be present on some replicas" in str(failure.value)
        assert cluster.clock.elapsed < 0.01  # refusals are immediate: no deadline waited out

    simulate(cluster.clock, scenario)
    assert live(cluster, a, key) == [VALUE]  # the coordinating replica's own write stays
    assert cluster.network.messages("merge") == [
        m for m in cluster.network.sent if m.target != fallback
    ]


def test_a_read_without_its_quorum_fails_at_the_deadline(cluster: SimCluster) -> None:
    key, (a, b, c), _ = any_key(cluster)
    cluster.network.paused |= {b, c}

    async def scenario() -> None:
        with pytest.raises(Unavailable) as failure:
            await cluster.node(a).coordinator.get(key, r=2, timeout_ms=300, strict=True)
        # The silent replicas' calls time out with the request (DEADLINE_EXCEEDED each).
        assert failure.value.answered == 1 and "DEADLINE_EXCEEDED" in str(failure.value)
        assert cluster.clock.elapsed == pytest.approx(0.3)

    simulate(cluster.clock, scenario)


# ---- sloppy quorum: stand-ins with hints ----


def test_a_refused_primary_is_replaced_by_a_fallback_that_keeps_a_hint(
    cluster: SimCluster,
) -> None:
    key, (a, b, _c), fallback = any_key(cluster)
    cluster.network.refusing.add(b)

    async def scenario() -> None:
        await put(cluster.node(a), key, w=3)
        assert cluster.clock.elapsed < 0.01

    simulate(cluster.clock, scenario)
    assert cluster.hinted(fallback) == [(b, key)]
    assert cluster.stored(fallback, key) is None  # a hint, not data of its own
    stand_in = [m for m in cluster.network.messages("merge") if m.target == fallback]
    assert [m.hint_for for m in stand_in] == [b]


def test_a_slow_primary_gets_a_stand_in_after_the_replica_timeout(cluster: SimCluster) -> None:
    key, (a, b, _c), fallback = any_key(cluster)
    cluster.network.paused.add(b)  # takes the request, never answers

    async def scenario() -> None:
        await put(cluster.node(a), key, w=3)
        # replica_timeout_ms is 500: the stand-in is called then and answers at once.
        assert 0.5 <= cluster.clock.elapsed < 0.51

    simulate(cluster.clock, scenario)
    assert cluster.hinted(fallback) == [(b, key)]


def test_a_primary_held_down_is_replaced_without_being_called(cluster: SimCluster) -> None:
    key, (a, b, _c), fallback = any_key(cluster)
    cluster.held_down.add(b)

    async def scenario() -> None:
        await put(cluster.node(a), key, w=3)
        assert cluster.clock.elapsed < 0.01

    simulate(cluster.clock, scenario)
    assert [m for m in cluster.network.sent if m.target == b] == []
    assert cluster.hinted(fallback) == [(b, key)]


def test_a_sloppy_read_is_answered_by_the_stand_in_holding_the_hint(cluster: SimCluster) -> None:
    key, (a, b, c), _fallback = any_key(cluster)

    async def scenario() -> None:
        cluster.held_down.add(b)
        await put(cluster.node(a), key, w=3)
        await cluster.drain()
        # a and c are held down now: only b (the data's primary) and the fallback remain.
        cluster.held_down.clear()
        cluster.held_down |= {a, c}
        read = await cluster.node(b).coordinator.get(key, r=2)
        assert read.values == (VALUE,)

    simulate(cluster.clock, scenario)


def test_a_write_while_partitions_move_is_copied_to_the_pending_owner(tmp_path: Path) -> None:
    sim = make_cluster(tmp_path, members=4)
    try:
        everyone = sorted(sim.nodes)
        newcomer = everyone[-1]
        sim.move_partitions(current=everyone[:3], pending=everyone)
        pending = sim.node(everyone[0]).router.pending_ring
        assert pending is not None
        key = next(
            k
            for k in (f"key-{i}".encode() for i in range(10_000))
            if newcomer in pending.primaries(k)
        )
        a = sim.primaries(key)[0]
        sim.network.refusing.add(newcomer)  # the copy does not count towards w...

        async def scenario() -> None:
            await put(sim.node(a), key, w=3, strict=True)
            await sim.drain()
            sim.network.refusing.clear()  # ...but is sent on every write
            await put(sim.node(a), key, b"again", w=3, strict=True)
            await sim.drain()

        simulate(sim.clock, scenario)
        copies = [m for m in sim.network.messages("merge") if m.target == newcomer]
        assert len(copies) == 2 and all(m.hint_for == "" for m in copies)
        # The state shipped is the key's whole state after the write: both siblings.
        assert sorted(live(sim, newcomer, key)) == sorted([VALUE, b"again"])
        assert newcomer not in sim.primaries(key)
    finally:
        sim.close()


# ---- forwarding ----


def test_a_put_on_a_node_that_is_not_a_replica_is_forwarded(cluster: SimCluster) -> None:
    key, (a, _b, _c), outsider = any_key(cluster)

    async def scenario() -> None:
        answer = await put(cluster.node(outsider), key)
        assert answer.context
        await cluster.drain()

    simulate(cluster.clock, scenario)
    forwards = cluster.network.messages("forward_put")
    assert [(m.source, m.target) for m in forwards] == [(outsider, a)]
    state = cluster.stored(a, key)
    assert state is not None
    # Only replicas make dots: the write's dot is the first primary's, not the outsider's.
    assert set(state.clock.vector) == {cluster.node(a).replica.actor}


def test_a_forward_tries_primaries_held_down_last(cluster: SimCluster) -> None:
    key, (a, b, _c), outsider = any_key(cluster)
    cluster.held_down.add(a)

    async def scenario() -> None:
        await put(cluster.node(outsider), key, w=2)

    simulate(cluster.clock, scenario)
    assert [m.target for m in cluster.network.messages("forward_put")] == [b]


def test_a_forward_moves_on_only_when_the_put_was_never_sent(cluster: SimCluster) -> None:
    key, (a, b, _c), outsider = any_key(cluster)
    cluster.network.refusing.add(a)

    async def scenario() -> None:
        await put(cluster.node(outsider), key)

    simulate(cluster.clock, scenario)
    assert [m.target for m in cluster.network.messages("forward_put")] == [a, b]


def test_a_forward_that_times_out_fails_without_a_second_try(cluster: SimCluster) -> None:
    key, (a, _b, _c), outsider = any_key(cluster)
    cluster.network.paused.add(a)  # it may have applied the put: trying b could apply it twice

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="no answer in time"):
            await put(cluster.node(outsider), key, timeout_ms=400)
        assert cluster.clock.elapsed == pytest.approx(0.4)

    simulate(cluster.clock, scenario)
    assert [m.target for m in cluster.network.messages("forward_put")] == [a]


def test_a_put_forwarded_too_many_times_is_refused(cluster: SimCluster) -> None:
    key, _, outsider = any_key(cluster)

    async def scenario() -> None:
        with pytest.raises(Unavailable, match="forwarded 3 times"):
            await cluster.node(outsider).coordinator.put(PutCommand(key, VALUE), hops=3)

    simulate(cluster.clock, scenario)
    assert cluster.network.sent == []


# ---- read repair ----


def test_read_repair_brings_a_stale_primary_up_to_date(cluster: SimCluster) -> None:
    key, (a, _b, c), _ = any_key(cluster)

    async def scenario() -> None:
        cluster.network.refusing.add(c)
        await put(cluster.node(a), key, strict=True)
        await cluster.drain()
        assert live(cluster, c, key) == []
        cluster.network.refusing.clear()
        before = len(cluster.network.sent)
        read = await cluster.node(a).coordinator.get(key, r=2)
        assert read.values == (VALUE,)
        await cluster.drain()  # the third reply arrives, then the repair
        after_read = cluster.network.sent[before:]
        assert [(m.method, m.target) for m in after_read if m.method == "merge"] == [("merge", c)]

    simulate(cluster.clock, scenario)
    assert live(cluster, c, key) == [VALUE]
    assert cluster.node(a).counters["read_repairs"] == 1


def test_a_read_of_replicas_that_agree_repairs_nothing(cluster: SimCluster) -> None:
    key, (a, b, _c), _ = any_key(cluster)

    async def scenario() -> None:
        await put(cluster.node(a), key)
        await cluster.drain()
        sent = len(cluster.network.messages("merge"))
        await cluster.node(b).coordinator.get(key, r=3)
        await cluster.drain()
        assert len(cluster.network.messages("merge")) == sent

    simulate(cluster.clock, scenario)
    assert cluster.node(b).counters["read_repairs"] == 0


# ---- deadlines ----


def test_a_reply_after_the_deadline_is_ignored(cluster: SimCluster) -> None:
    key, (a, b, c), _ = any_key(cluster)
    cluster.network.reply_delay[c] = 10.0  # c applies the write, its answer comes too late

    async def scenario() -> None:
        with pytest.raises(Unavailable) as failure:
            await put(cluster.node(a), key, w=3, strict=True, timeout_ms=300)
        assert failure.value.answered == 2
        assert "deadline reached" in str(failure.value)
        assert cluster.clock.elapsed == pytest.approx(0.3)
        await cluster.drain()

    simulate(cluster.clock, scenario)
    # The write is present where it was applied ("may be present on some replicas").
    assert [live(cluster, p, key) for p in (a, b, c)] == [[VALUE]] * 3


def test_a_read_answered_after_its_deadline_fails(cluster: SimCluster) -> None:
    key, (a, b, c), _ = any_key(cluster)

    async def scenario() -> None:
        await put(cluster.node(a), key)
        await cluster.drain()
        cluster.network.reply_delay.update({b: 5.0, c: 5.0})
        with pytest.raises(Unavailable, match="deadline reached"):
            await cluster.node(a).coordinator.get(key, r=2, timeout_ms=250, strict=True)

    simulate(cluster.clock, scenario)


def test_the_request_deadline_defaults_to_the_node_limit(cluster: SimCluster) -> None:
    key, (a, b, c), _ = any_key(cluster)
    cluster.network.paused |= {b, c}

    async def scenario() -> None:
        with pytest.raises(Unavailable):
            await put(cluster.node(a), key, strict=True)
        assert cluster.clock.elapsed == pytest.approx(2.0)  # request_timeout_ms

    simulate(cluster.clock, scenario)


# ---- work done once per request ----


def test_a_request_hashes_its_key_once_per_node(
    cluster: SimCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, (a, _b, _c), _ = any_key(cluster)
    hashed: list[bytes] = []
    real_hash = _native.hash_key

    def counting(data: bytes) -> int:
        hashed.append(data)
        return real_hash(data)

    async def scenario() -> tuple[int, int]:
        first = await put(cluster.node(a), key)
        await cluster.drain()
        monkeypatch.setattr(_native, "hash_key", counting)
        # A put with a context: decoded, routed, stored and answered with one hash on the
        # coordinator; each other replica hashes once to store the merge.
        await put(cluster.node(a), key, b"second", context=first.context)
        await cluster.drain()
        put_hashes = len(hashed)
        # A get: routed, read locally and answered with one hash on the coordinator; each
        # other replica hashes once to read its data and its hints.
        await cluster.node(a).coordinator.get(key, r=3)
        await cluster.drain()
        return put_hashes, len(hashed) - put_hashes

    assert simulate(cluster.clock, scenario) == (3, 3)
    assert set(hashed) == {key}


def test_a_put_ships_the_stored_bytes_to_every_replica(cluster: SimCluster) -> None:
    key, (a, b, c), fallback = any_key(cluster)
    cluster.network.refusing.add(c)  # so a stand-in is sent the same bytes too

    async def scenario() -> None:
        await put(cluster.node(a), key, w=3)
        await cluster.drain()

    simulate(cluster.clock, scenario)
    merges = cluster.network.messages("merge")
    assert sorted(m.target for m in merges) == sorted([b, c, fallback])
    stored = cluster.stored(a, key)
    assert stored is not None
    record = merges[0].record
    assert all(m.record is record for m in merges)  # one encoding, not one per replica
    assert record == encode_record(stored)


# ---- group commit ----


def test_a_write_whose_commit_fails_is_never_shipped(cluster: SimCluster) -> None:
    """The coordinator's write is durable before any other node sees its dot: a failed
    commit fails the put, ships nothing, and the next write takes the same dot unseen."""
    key, (a, _b, _c), _ = any_key(cluster)
    storage = cluster.storages[a]
    real_commit = storage.commit
    failing = [True]

    def commit() -> None:
        if failing[0]:
            storage._staged.clear()  # what a failed WriteBatch leaves: nothing stored
            callbacks, storage._committed_callbacks = storage._committed_callbacks, []
            error = StorageError("write to RocksDB failed: No space left on device")
            for callback in callbacks:
                callback(error)
            raise error
        real_commit()

    storage.commit = commit  # type: ignore[method-assign]

    async def scenario() -> tuple[int, int]:
        with pytest.raises(StorageError):
            await put(cluster.node(a), key)
        await cluster.drain()
        shipped = len(cluster.network.messages("merge"))
        failing[0] = False
        await put(cluster.node(a), key, b"again")
        await cluster.drain()
        return shipped, len(cluster.network.messages("merge"))

    assert simulate(cluster.clock, scenario) == (0, 2)
    stored = cluster.stored(a, key)
    assert stored is not None and stored.live_values == [b"again"]
    assert [s.dot.counter for s in stored.siblings] == [1]


def test_the_writes_of_a_put_many_commit_together_on_each_replica(cluster: SimCluster) -> None:
    a = cluster.ring.members[0]
    keys = []
    for i in range(10_000):
        key = f"batch-{i}".encode()
        if cluster.primaries(key)[0] == a:
            keys.append(key)
        if len(keys) == 40:
            break
    commits = {address: storage.commits for address, storage in cluster.storages.items()}

    async def scenario() -> None:
        answers = await cluster.node(a).coordinator.put_many(
            [PutCommand(key, b"v") for key in keys]
        )
        assert all(not isinstance(x, Exception) for x in answers)
        await cluster.drain()

    simulate(cluster.clock, scenario)
    # 40 writes on the coordinator, one WriteBatch; each replica merges what reached it
    # together (the fake network delivers each merge on its own: a few batches at most).
    assert cluster.storages[a].commits - commits[a] == 1
    assert all(cluster.stored(a, key) is not None for key in keys)

"""Write ids on the request path (issue 16), in process: a retry of a put, with the id of its
first try, is answered as the first try would have been, without a second sibling, by the
coordinator that applied it, by another that holds it, and by the first after the write
was replaced; a retry that lands where the first try never arrived makes a twin that reads
as one write and is replaced with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.limits import MAX_WRITE_ID_BYTES
from kvstore.core.requests import PutAnswer, PutCommand
from kvstore.core.ring import routed
from kvstore.core.versions import Dot
from kvstore.errors import InvalidArgument
from kvstore.node.writeids import RecentWriteIds
from kvstore.rpc import translate
from tests.sim.fakes import SimCluster, make_cluster, simulate

VALUE = b"value"
WRITE_ID = bytes(range(16))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SimCluster]:
    # 4 members, N=3 R=2 W=2: every key has 3 primaries and 1 fallback.
    sim = make_cluster(tmp_path)
    yield sim
    sim.close()


def any_key(cluster: SimCluster) -> tuple[bytes, list[str], str]:
    key = cluster.key_where(lambda preference: True)
    return key, cluster.primaries(key), cluster.fallbacks(key)[0]


def siblings(cluster: SimCluster, address: str, key: bytes) -> list[tuple[bytes | None, bytes]]:
    state = cluster.stored(address, key)
    return [] if state is None else [(s.value, s.write_id) for s in state.siblings]


def test_a_retry_at_a_coordinator_holding_the_write_makes_no_second_dot(
    cluster: SimCluster,
) -> None:
    key, (a, b, c), _ = any_key(cluster)
    command = PutCommand(key, VALUE, write_id=WRITE_ID)

    async def scenario() -> tuple[PutAnswer, PutAnswer, PutAnswer]:
        first = await cluster.node(a).coordinator.put(command)
        await cluster.drain()
        again_b = await cluster.node(b).coordinator.put(command)
        again_a = await cluster.node(a).coordinator.put(command)
        await cluster.drain()
        return first, again_b, again_a

    first, again_b, again_a = simulate(cluster.clock, scenario)
    assert again_b == first and again_a == first
    for node in (a, b, c):
        assert siblings(cluster, node, key) == [(VALUE, WRITE_ID)]
        state = cluster.stored(node, key)
        assert state is not None and set(state.clock.vector) == {cluster.node(a).replica.actor}
    assert cluster.node(b).counters["write_id_retries"] == 1
    assert cluster.node(a).counters["write_id_retries"] == 1
    # Control: another write id with the same context is another write.
    other = PutCommand(key, VALUE, write_id=b"another write")
    simulate(cluster.clock, lambda: cluster.node(b).coordinator.put(other))
    assert len(siblings(cluster, b, key)) == 2


def test_a_retry_is_answered_only_once_w_replicas_hold_the_write(cluster: SimCluster) -> None:
    """The first try reached its coordinator alone (w=1, the others refusing); the retry
    at the same coordinator, w=2, ships the record and waits for an acknowledgement."""
    key, (a, b, c), fallback = any_key(cluster)
    command = PutCommand(key, VALUE, write_id=WRITE_ID, strict=True)

    async def scenario() -> None:
        cluster.network.refusing.update({b, c, fallback})
        await cluster.node(a).coordinator.put(PutCommand(key, VALUE, w=1, write_id=WRITE_ID))
        await cluster.drain()
        assert siblings(cluster, b, key) == [] == siblings(cluster, c, key)
        cluster.network.refusing.clear()
        cluster.network.latency[c] = 0.3  # b answers first
        before = len(cluster.network.sent)
        await cluster.node(a).coordinator.put(command)
        assert siblings(cluster, b, key) == [(VALUE, WRITE_ID)]
        merges = [m.target for m in cluster.network.sent[before:] if m.method == "merge"]
        assert sorted(merges) == sorted([b, c])
        await cluster.drain()

    simulate(cluster.clock, scenario)
    assert siblings(cluster, c, key) == [(VALUE, WRITE_ID)]
    assert siblings(cluster, a, key) == [(VALUE, WRITE_ID)]


def test_a_retry_after_the_write_was_replaced_does_not_bring_it_back(
    cluster: SimCluster,
) -> None:
    key, (a, b, c), _ = any_key(cluster)
    command = PutCommand(key, VALUE, write_id=WRITE_ID)

    async def scenario() -> tuple[PutAnswer, PutAnswer]:
        first = await cluster.node(a).coordinator.put(command)
        await cluster.node(a).coordinator.put(
            PutCommand(key, b"newer", context=first.context, write_id=b"the next write")
        )
        again = await cluster.node(a).coordinator.put(command)
        await cluster.drain()
        return first, again

    first, again = simulate(cluster.clock, scenario)
    assert again == first
    for node in (a, b, c):
        assert siblings(cluster, node, key) == [(b"newer", b"the next write")]
    # Control: without the node's memories of the ids it made and replaced, the retry is a
    # new write. (With either, it is answered as applied.)
    node_a = cluster.node(a)
    node_a.replica._recent_write_ids = RecentWriteIds()
    node_a.replica._replaced_write_ids = RecentWriteIds()
    simulate(cluster.clock, lambda: node_a.coordinator.put(command))
    assert len(siblings(cluster, a, key)) == 2


def test_twins_of_a_retry_read_as_one_write_and_are_replaced_together(
    cluster: SimCluster,
) -> None:
    """The first try applied at a alone, its retry at b alone: two dots of one write. After
    a read repairs the replicas, each shows the write once, and a put with the retry's
    answer replaces both."""
    key, (a, b, c), fallback = any_key(cluster)

    async def scenario() -> PutAnswer:
        cluster.network.refusing.update({b, c, fallback})
        await cluster.node(a).coordinator.put(PutCommand(key, VALUE, w=1, write_id=WRITE_ID))
        cluster.network.refusing = {a, c, fallback}
        retried = await cluster.node(b).coordinator.put(
            PutCommand(key, VALUE, w=1, write_id=WRITE_ID)
        )
        await cluster.drain()
        cluster.network.refusing.clear()
        read = await cluster.node(c).coordinator.get(key, r=3)
        assert read.values == (VALUE,)
        await cluster.drain()  # read repair
        return retried

    retried = simulate(cluster.clock, scenario)
    for node in (a, b, c):
        assert siblings(cluster, node, key) == [(VALUE, WRITE_ID), (VALUE, WRITE_ID)]
        state = cluster.stored(node, key)
        assert state is not None and state.live_values == [VALUE]

    replace = PutCommand(key, b"next", context=retried.context, write_id=b"next")
    simulate(cluster.clock, lambda: cluster.node(c).coordinator.put(replace, hops=0))
    simulate(cluster.clock, cluster.drain)
    for node in (a, b, c):
        assert siblings(cluster, node, key) == [(b"next", b"next")]


def test_a_forwarded_put_keeps_its_write_id(cluster: SimCluster) -> None:
    key, (a, _b, _c), outsider = any_key(cluster)
    command = PutCommand(key, VALUE, write_id=WRITE_ID)

    async def scenario() -> tuple[PutAnswer, PutAnswer]:
        first = await cluster.node(outsider).coordinator.put(command)
        await cluster.drain()
        return first, await cluster.node(outsider).coordinator.put(command)

    first, again = simulate(cluster.clock, scenario)
    assert again == first
    assert siblings(cluster, a, key) == [(VALUE, WRITE_ID)]
    assert cluster.node(a).counters["write_id_retries"] == 1


def test_a_write_id_past_its_bound_is_refused_and_stores_nothing(cluster: SimCluster) -> None:
    key, (a, _b, _c), _ = any_key(cluster)
    longest = PutCommand(key, VALUE, write_id=b"i" * MAX_WRITE_ID_BYTES)
    too_long = PutCommand(key, VALUE, write_id=b"i" * (MAX_WRITE_ID_BYTES + 1))

    async def scenario() -> None:
        with pytest.raises(InvalidArgument, match="write_id is 65 bytes; the limit is 64"):
            await cluster.node(a).coordinator.put(too_long)
        await cluster.drain()
        assert cluster.stored(a, key) is None
        await cluster.node(a).coordinator.put(longest)

    simulate(cluster.clock, scenario)
    assert siblings(cluster, a, key) == [(VALUE, b"i" * MAX_WRITE_ID_BYTES)]


def test_puts_forwards_and_batch_items_carry_their_write_ids_across_the_wire() -> None:
    command = PutCommand(b"k", None, context=b"c", w=2, write_id=WRITE_ID)
    assert translate.put_command(translate.put_request(command)) == command
    batch = pb.PutManyRequest(
        items=[
            pb.PutRequest(key=b"k1", value=b"v", write_id=b"one"),
            pb.PutRequest(key=b"k2", value=b"v"),
        ],
        w=1,
    )
    assert [c.write_id for c in translate.put_many_commands(batch)] == [b"one", b""]


def test_the_recent_write_ids_are_bounded_in_count_and_time() -> None:
    recent = RecentWriteIds(capacity=2, ttl_s=10.0)
    recent.remember(b"x", 7, Dot("a", 1), now=0.0)
    recent.remember(b"y", 7, Dot("a", 2), now=1.0)
    assert recent.dot_of(b"x", 7, now=2.0) == Dot("a", 1)
    assert recent.dot_of(b"x", 8, now=2.0) is None  # another key
    recent.remember(b"z", 7, Dot("a", 3), now=2.0)
    assert recent.dot_of(b"x", 7, now=2.0) is None and len(recent) == 2  # the oldest went
    assert recent.dot_of(b"y", 7, now=10.5) == Dot("a", 2)
    assert recent.dot_of(b"y", 7, now=11.0) is None and len(recent) == 1  # expired


def test_retries_of_a_delete_and_with_return_body_answer_as_the_first_try(
    cluster: SimCluster,
) -> None:
    key, (a, b, _c), _ = any_key(cluster)
    delete = PutCommand(key, None, write_id=b"a delete")
    body = PutCommand(key, VALUE, write_id=WRITE_ID, return_body=True)

    async def scenario() -> tuple[PutAnswer, ...]:
        first_body = await cluster.node(a).coordinator.put(body)
        await cluster.drain()
        again_body = await cluster.node(b).coordinator.put(body)
        first_delete = await cluster.node(a).coordinator.put(delete)
        await cluster.drain()
        again_delete = await cluster.node(b).coordinator.put(delete)
        await cluster.drain()
        return first_body, again_body, first_delete, again_delete

    first_body, again_body, first_delete, again_delete = simulate(cluster.clock, scenario)
    assert first_body.values == (VALUE,) and again_body == first_body
    assert again_delete == first_delete
    # The delete has no context: the value stays beside one tombstone, not two.
    assert siblings(cluster, b, key) == [(VALUE, WRITE_ID), (None, b"a delete")]
    assert cluster.node(b).counters["write_id_retries"] == 2


def hedged_then_replaced_then_late(cluster: SimCluster, forget_replaced: bool) -> bytes:
    """A hedged put: its first try stuck at the key's first primary a, its hedge applied by
    b and c. The writer writes the key again from the hedge's answer. Then the first try
    runs at a after all (a slow node, not a stalled one the stall fence would stop): a twin
    of the replaced write. `forget_replaced`: b and c lose their memory of replaced ids
    first. Returns the key."""
    key, (a, b, c), fallback = any_key(cluster)
    command = PutCommand(key, VALUE, write_id=WRITE_ID)

    async def run() -> None:
        cluster.network.refusing.update({a, fallback})
        hedged = await cluster.node(b).coordinator.put(command)
        await cluster.node(c).coordinator.put(
            PutCommand(key, b"newer", context=hedged.context, write_id=b"the next write")
        )
        await cluster.drain()
        if forget_replaced:
            for node in (b, c):
                cluster.node(node).replica._replaced_write_ids = RecentWriteIds()
        cluster.network.refusing.clear()
        await cluster.node(a).coordinator.put(command)  # the first try, late
        await cluster.drain()

    simulate(cluster.clock, run)
    return key


def test_a_late_twin_of_a_replaced_write_is_absorbed_not_brought_back(
    cluster: SimCluster,
) -> None:
    """b and c, which dropped the write's sibling, drop its twin as they take it (keeping
    its dot in the clock), and a read repairs a: no replica shows the old value again."""
    key = hedged_then_replaced_then_late(cluster, forget_replaced=False)
    a, b, c = cluster.primaries(key)
    for node in (b, c):
        assert siblings(cluster, node, key) == [(b"newer", b"the next write")]
    assert cluster.node(b).counters["write_id_twins_absorbed"] >= 1
    # Read where the twin is (the late coordinator): b's and c's clocks cover its dot.
    read = simulate(cluster.clock, lambda: cluster.node(a).coordinator.get(key, r=3))
    assert read.values == (b"newer",)
    simulate(cluster.clock, cluster.drain)  # the read repaired a
    for node in (a, b, c):
        assert siblings(cluster, node, key) == [(b"newer", b"the next write")]
    # A coordinator that dropped the write answers another late try of it as applied.
    command = PutCommand(key, VALUE, write_id=WRITE_ID)
    retries = cluster.node(c).counters["write_id_retries"]
    simulate(cluster.clock, lambda: cluster.node(c).coordinator.put(command))
    assert cluster.node(c).counters["write_id_retries"] == retries + 1
    assert siblings(cluster, c, key) == [(b"newer", b"the next write")]


def test_a_sibling_still_held_is_never_taken_for_its_own_replaced_twin(
    cluster: SimCluster,
) -> None:
    """The memory of replaced ids is written as a change is staged; a commit that then
    fails leaves the dropped sibling live. Such a sibling is not absorbed by later merges:
    only a twin, another dot of its write id, is."""
    key, (a, b, _c), _ = any_key(cluster)
    command = PutCommand(key, VALUE, write_id=WRITE_ID)
    simulate(cluster.clock, lambda: cluster.node(a).coordinator.put(command))
    simulate(cluster.clock, cluster.drain)
    replica = cluster.node(b).replica
    state = cluster.stored(b, key)
    assert state is not None
    (held,) = state.siblings
    # As if a write dropping it had been staged here and its commit had failed.
    now = replica._clock.monotonic()
    replica._replaced_write_ids.remember(WRITE_ID, routed(key).position, held.dot, now)
    concurrent = PutCommand(key, b"concurrent", write_id=b"another write")
    simulate(cluster.clock, lambda: cluster.node(a).coordinator.put(concurrent))
    simulate(cluster.clock, cluster.drain)
    assert sorted(siblings(cluster, b, key)) == [
        (b"concurrent", b"another write"),
        (VALUE, WRITE_ID),
    ]


def test_without_the_memory_of_replaced_ids_a_late_twin_comes_back(cluster: SimCluster) -> None:
    """The control of the test above: replicas that forgot which writes they replaced keep
    the late twin, and the old value reads again beside the newer one."""
    key = hedged_then_replaced_then_late(cluster, forget_replaced=True)
    a = cluster.primaries(key)[0]
    read = simulate(cluster.clock, lambda: cluster.node(a).coordinator.get(key, r=3))
    assert sorted(read.values) == [b"newer", VALUE]

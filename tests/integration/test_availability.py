"""Staying available through failures, with five real nodes (N=3, R=2, W=2) on 127.0.0.1:
sloppy quorum and hinted handoff (kill -9, SIGSTOP), anti-entropy (a wiped replica), read
repair. Every test ends with the invariant: no acknowledged write is lost.

Timers are shortened (gossip every 200 ms) so failures are noticed in about two seconds;
the mechanisms are those of the defaults.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterable

import pytest

from kvstore import Client
from kvstore.core.ring import Ring
from kvstore.errors import Unavailable
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration

PARTITIONS = 64
FAST = (
    "--partitions", str(PARTITIONS),
    "--gossip-interval-ms", "200",
    "--replica-timeout-ms", "300",
    "--hint-interval-ms", "200",
    "--handoff-interval-ms", "300",
)  # fmt: skip
NO_ANTI_ENTROPY = ("--anti-entropy-interval-ms", "0")
KEYS = 500


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> float:
    """Poll `check` until it holds (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


def ring_of(cluster: LocalCluster) -> Ring:
    """The ring the nodes bootstrap with: every node is in the seeds."""
    return Ring(cluster.addresses, PARTITIONS, 3)


def hints_pending(kv: Client, nodes: Iterable[str]) -> int:
    return sum(kv.status(node).hints_pending for node in nodes)


def on_all_primaries(kv: Client, ring: Ring, written: dict[str, bytes]) -> Callable[[], bool]:
    """Every written key is held, with its value, by each of its primaries' own storage."""

    def check() -> bool:
        for key, value in written.items():
            for node in ring.primaries(key.encode()):
                if value not in kv.local_get(node, key).values:
                    return False
        return True

    return check


def assert_nothing_lost(kv: Client, acknowledged: dict[str, bytes]) -> None:
    """Each acknowledged write is in a final quorum read. Keys are written once each, so
    "present or causally covered by a present version" reduces to "present"."""
    lost = [k for k, v in acknowledged.items() if v not in kv.get(k).values]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"


def write_keys(kv: Client, prefix: str, count: int) -> dict[str, bytes]:
    """Write `count` new keys; every one must be acknowledged."""
    written = {}
    for i in range(count):
        key, value = f"{prefix}-{i}", f"{prefix}-value-{i}".encode()
        kv.put(key, value)
        written[key] = value
    return written


def live(cluster: LocalCluster, *down: int) -> list[str]:
    return [n.address for n in cluster.nodes if n.index not in down]


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_writes_with_a_primary_down_reach_it_by_hinted_handoff(
    make_cluster: ClusterFactory, fault: str
) -> None:
    cluster = make_cluster(5, FAST + NO_ANTI_ENTROPY)
    ring = ring_of(cluster)
    victim = 0
    others = live(cluster, victim)
    with Client(cluster.clients_of(others), timeout=5.0) as kv:
        if fault == "kill":
            cluster.kill_node(victim)
        else:
            cluster.signal_node(victim, signal.SIGSTOP)
            # A put forwarded to a paused primary before the detector holds it down times
            # out and fails (outcome unknown: it is not retried elsewhere, which could apply
            # it twice); kvchaos's pause scenario covers that window. Here: after detection.
            victim_address = cluster.addresses[victim]
            wait_for(
                "every live node holds the paused node down",
                lambda: all(
                    not next(m.up for m in kv.status(a).members if m.address == victim_address)
                    for a in others
                ),
                15,
            )
        try:
            written = write_keys(kv, fault, KEYS)
            # Keys of which the victim is a primary went to a fallback with a hint.
            victims_keys = [k for k in written if cluster.addresses[victim] in ring.primaries(
                k.encode())]  # fmt: skip
            assert len(victims_keys) > KEYS // 5
            # A stand-in is sent once the victim is silent for replica_timeout_ms, which may
            # be after the client got its answer from the two live primaries.
            wait_for(
                "a hint for every key of the victim",
                lambda: hints_pending(kv, others) >= len(victims_keys),
                10,
            )
        finally:
            if fault == "kill":
                cluster.start_node(victim)
            else:
                cluster.signal_node(victim, signal.SIGCONT)
        with Client(cluster.client_addresses, timeout=5.0) as every:
            wait_for("hints delivered", lambda: hints_pending(every, others) == 0, 30)
            wait_for("every key on its three primaries", on_all_primaries(every, ring, written), 30)
            assert_nothing_lost(every, written)
            delivered = sum(every.status(n).counters["hints_delivered"] for n in cluster.addresses)
            assert delivered >= len(victims_keys)


def test_a_wiped_replica_is_rebuilt_by_anti_entropy_alone(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(5, (*FAST, "--anti-entropy-interval-ms", "20"))
    ring = ring_of(cluster)
    victim = 0
    with Client(cluster.client_addresses, timeout=5.0) as kv:
        written = write_keys(kv, "wipe", KEYS)
        wait_for("written everywhere", on_all_primaries(kv, ring, written), 30)
        cluster.stop_node(victim)
        shutil.rmtree(cluster.nodes[victim].data_dir)
        cluster.start_node(victim)
        node = cluster.addresses[victim]
        mine = {k: v for k, v in written.items() if node in ring.primaries(k.encode())}
        assert len(mine) > KEYS // 5
        # It came back empty. Anti-entropy (every 20 ms) starts with the node, so a partition
        # or two may be rebuilt before this looks: most of its keys are still missing.
        sample = list(mine)[:40]
        missing = sum(not kv.local_get(node, k).found for k in sample)
        assert missing >= 3 * len(sample) // 4, f"only {missing} of {len(sample)} missing"
        # No client reads until it is back: only LocalGet, which coordinates nothing.
        took = wait_for("anti-entropy rebuilt the wiped replica", on_all_primaries(
            kv, ring, mine), 90, interval=1.0)  # fmt: skip
        print(f"anti-entropy rebuilt {len(mine)} keys in {took:.1f} s")
        assert kv.status(node).counters["ae_keys_repaired"] > 0
        assert_nothing_lost(kv, written)


def test_one_get_repairs_a_stale_replica(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(5, FAST + NO_ANTI_ENTROPY)
    ring = ring_of(cluster)
    key = "read-repair"
    primaries = ring.primaries(key.encode())
    stale = cluster.addresses.index(primaries[2])
    coordinator = primaries[0]
    with Client([cluster.client_of(coordinator)], timeout=2.0) as kv:
        cluster.stop_node(stale)
        # Strict: only the two live primaries take it, no fallback keeps a hint.
        kv.put(key, b"fresh", sloppy=False)
        assert hints_pending(kv, live(cluster, stale)) == 0
        # The write's own replication to the stale primary gives up at its deadline (2 s);
        # restarted sooner, the replica could still be reached by it.
        time.sleep(2.5)
        cluster.start_node(stale)
        wait_for(
            "the coordinator sees the restarted replica up",
            lambda: next(m.up for m in kv.status(coordinator).members if m.address == primaries[2]),
            15,
        )
        assert not kv.local_get(primaries[2], key).found  # stale: nothing repaired it yet
        assert kv.get(key).values == [b"fresh"]
        wait_for("read repair", lambda: kv.local_get(primaries[2], key).values == [b"fresh"], 5)
        assert kv.status(coordinator).counters["read_repairs"] >= 1
        assert_nothing_lost(kv, {key: b"fresh"})


def test_strict_write_refuses_fallbacks(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(5, FAST + NO_ANTI_ENTROPY)
    ring = ring_of(cluster)
    key = "strict"
    primaries = ring.primaries(key.encode())
    down = [cluster.addresses.index(p) for p in primaries[1:]]
    with Client([cluster.client_of(primaries[0])], timeout=3.0) as kv:
        for index in down:
            cluster.kill_node(index)
        with pytest.raises(Unavailable):
            kv.put(key, b"v", sloppy=False)
        # Sloppy (the default): two fallbacks stand in, the write is acknowledged.
        kv.put(key, b"v2")
        assert kv.get(key).values and b"v2" in kv.get(key).values


def test_tombstones_are_purged_only_once_every_replica_has_them(
    make_cluster: ClusterFactory,
) -> None:
    gc = (
        "--tombstone-grace-s", "1", "--hint-max-age-s", "1",
        "--tombstone-gc-interval-ms", "300", "--anti-entropy-interval-ms", "100",
    )  # fmt: skip
    cluster = make_cluster(3, (*FAST, *gc))
    nodes = cluster.addresses
    with Client(cluster.clients_of(nodes[:2]), timeout=5.0) as kv:
        kv.put("everywhere", b"v", w=3)
        kv.put("missed", b"v", w=3)
        kv.delete("everywhere", context=kv.get("everywhere").context, w=3)
        cluster.stop_node(2)  # misses the second delete
        kv.delete("missed", context=kv.get("missed").context)

        def tombstone_on(node: str, key: str) -> bool:
            held = kv.local_get(node, key)
            return not held.found and held.context != b""  # a vector but no live value

        # Past the grace period, with one replica down: nothing is purged (it may hold
        # the old value), on the live replicas the tombstones stay.
        time.sleep(2.5)
        assert tombstone_on(nodes[0], "missed") and tombstone_on(nodes[1], "missed")
        cluster.start_node(2)
        # Back: anti-entropy gives it the tombstones, then they go from every replica.
        for key in ("everywhere", "missed"):
            wait_for(
                f"{key} purged everywhere",
                lambda key=key: all(kv.local_get(n, key).context == b"" for n in nodes),
                30,
            )
        assert not kv.get("missed").found
        # At least one purge per key; more when anti-entropy copied a tombstone back between
        # the replicas' deletes (a tombstone, never a value: it is purged again).
        assert sum(kv.status(n).counters["tombstones_purged"] for n in nodes) >= 2

"""The ring-aware client on real nodes: calls go to their key's primaries, a paused node costs
a client at most one failed call (none with hedges and write ids), its circuit breaker opens
and closes again, and reads are hedged around it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest

from kvstore.client import BreakerPolicy, Client, HedgePolicy
from kvstore.core.ring import Ring
from kvstore.errors import KvError
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import ClusterFactory, wait_converged

PARTITIONS = 16
FAST = ("--partitions", str(PARTITIONS), "--gossip-interval-ms", "200")  # fmt: skip
CLIENTS = 3
PUTS_PER_CLIENT = 60


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def forwarded(kv: Client, cluster: LocalCluster) -> int:
    return sum(kv.status(a).counters.get("puts_forwarded", 0) for a in cluster.addresses)


def test_calls_go_to_a_primary_of_their_key(make_cluster: ClusterFactory) -> None:
    # Four nodes, three replicas: a quarter of the keys have each node as a non-replica.
    cluster = make_cluster(4, FAST)
    wait_converged(cluster)
    with Client(cluster.seeds) as kv:
        before = forwarded(kv, cluster)
        for i in range(200):
            kv.put(f"routed-{i}", b"v")
        stats = kv.stats()
        assert stats.routed_calls == 200
        assert stats.to_primary == 200
        assert forwarded(kv, cluster) == before  # no node had to hand a write on
    # The control: a client that does not route, talking to one node only, makes it
    # forward the writes of keys it is not a replica of.
    ring = Ring(cluster.addresses, PARTITIONS, 3)
    first = cluster.addresses[0]
    keys = [f"unrouted-{i}" for i in range(200)]
    expected = sum(1 for k in keys if first not in ring.primaries(k.encode()))
    assert expected > 20
    with Client(cluster.client_addresses[0], route_by_ring=False) as kv:
        before = forwarded(kv, cluster)
        for key in keys:
            kv.put(key, b"v")
        assert forwarded(kv, cluster) - before == expected


@pytest.mark.parametrize("hedged_writes", [False, True])
def test_a_paused_node_costs_each_client_at_most_one_call(
    make_cluster: ClusterFactory, hedged_writes: bool
) -> None:
    """Unhedged (HedgePolicy(writes=False)), the first write sent to the paused node waits
    out its deadline and fails (its outcome unknown), and its breaker keeps the rest away.
    Hedged (the default: safe to repeat by their write ids), none fails."""
    cluster = make_cluster(5, FAST)
    wait_converged(cluster)
    victim = 2
    victim_client = cluster.client_addresses[victim]
    breaker = BreakerPolicy(open_s=0.3, max_open_s=1.0)
    hedge = HedgePolicy(writes=hedged_writes)
    clients = [
        Client(cluster.client_addresses, timeout=3.0, breaker=breaker, hedge=hedge)
        for _ in range(CLIENTS)
    ]
    # A reader whose breaker never opens on slowness and whose hedges have no budget (the
    # paused node is the first primary of a fifth of the keys, past the default 10%), and
    # which learned the ring while every node was up (one that asks later is told the paused
    # node is down and avoids it): its reads get round the node by hedging alone.
    reader = Client(
        cluster.client_addresses,
        timeout=5.0,
        breaker=BreakerPolicy(slow_limit=1000),
        hedge=HedgePolicy(max_share=1.0, max_burst=1000),
    )
    failures: list[list[str]] = [[] for _ in range(CLIENTS)]
    try:
        for n, kv in enumerate(clients):
            kv.put(f"warm-{n}", b"v", w=2)  # each has learned the ring
        reader.get("warm-0")
        cluster.signal_node(victim, signal.SIGSTOP)
        try:

            def load(n: int) -> None:
                for i in range(PUTS_PER_CLIENT):
                    try:
                        clients[n].put(f"paused-{n}-{i}", f"{n}-{i}".encode(), w=2)
                    except KvError as exc:
                        failures[n].append(f"paused-{n}-{i}: {type(exc).__name__}: {exc}")

            threads = [threading.Thread(target=load, args=(n,)) for n in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert not any(t.is_alive() for t in threads)
            assert all(len(f) <= (0 if hedged_writes else 1) for f in failures), failures
            stats = [kv.stats() for kv in clients]
            # The paused node's breaker opened in every client (a run of slow or failed
            # tries); with hedged writes, hedges carried its calls elsewhere.
            assert all(s.breaker_opens >= 1 for s in stats), stats
            if hedged_writes:
                assert all(s.hedges_won >= 1 for s in stats), stats

            # Reads of keys whose first primary is the paused node are hedged around it.
            for n in range(CLIENTS):
                for i in range(0, PUTS_PER_CLIENT, 3):
                    if any(f.startswith(f"paused-{n}-{i}:") for f in failures[n]):
                        continue
                    assert reader.get(f"paused-{n}-{i}", r=2).values == [f"{n}-{i}".encode()]
            read_stats = reader.stats()
            assert read_stats.failed == 0
            assert read_stats.hedges_won >= 1
        finally:
            cluster.signal_node(victim, signal.SIGCONT)

        # Back: the breaker half-opens, a probe succeeds, it closes.
        kv = clients[0]

        def closed() -> bool:
            for i in range(10):
                kv.get(f"probe-{i}")
            return kv.stats().breakers.get(victim_client) == "closed"

        wait_for("the resumed node's breaker closes", closed, 30)

        # No write left two siblings, though some were sent to the paused node first and
        # applied by it after it resumed, next to the hedge that answered.
        def settled() -> bool:
            return all(
                len(kv.get(f"paused-{n}-{i}", r=3).values) == 1
                for n in range(CLIENTS)
                for i in range(PUTS_PER_CLIENT)
                if not failures[n]
            )

        wait_for("every write holds one value", settled, 30)
    finally:
        for kv in [*clients, reader]:
            kv.close()


def test_a_client_outlives_its_only_seed(make_cluster: ClusterFactory) -> None:
    """The members it learned from the ring keep a client going when the one node it was
    given is gone."""
    cluster = make_cluster(3, FAST)
    wait_converged(cluster)
    with Client(cluster.client_addresses[0], timeout=3.0) as kv:
        wait_for(
            "the client knows every member",
            lambda: (
                kv.put("learn", b"v").context is not None
                and len(kv.topology().members) == 3
                and kv.stats().breakers.keys() >= set(cluster.client_addresses)
            ),
            15,
        )
        cluster.stop_node(0)
        for i in range(30):
            kv.put(f"after-seed-{i}", b"v", w=2)
            assert kv.get(f"after-seed-{i}", r=2).values == [b"v"]
        assert kv.stats().failed == 0

"""`kvstore drain` and `kvstore repair` on real secure clusters: health under each port's
real service names, a drain that moves clients away and delivers the node's hints before it
stops, and a repair that rebuilds a replica's missing key at once.

Background delivery and anti-entropy are switched off where a test needs to see that the
drain or the repair did the work, not the periodic loops.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable

import pytest

from kvstore import Client
from kvstore.cli.main import main
from kvstore.core.ring import Ring, routed
from kvstore.errors import Draining, InvalidArgument, Unavailable
from tests.conftest import ClusterFactory, wait_converged

pytestmark = pytest.mark.integration

PARTITIONS = 16
QUIET = (
    "--partitions", str(PARTITIONS),
    "--gossip-interval-ms", "200",
    "--replica-timeout-ms", "300",
    # No anti-entropy, and hint delivery once at start then only after the test (its least
    # setting is 10 ms; its most, 10 minutes): only a drain or a repair does the work.
    "--hint-interval-ms", "600000",
    "--anti-entropy-interval-ms", "0",
)  # fmt: skip


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def holds_up(kv: Client, node: str, other: str) -> bool:
    return bool(next(m.up for m in kv.status(node).members if m.address == other))


def test_health_names_on_each_port(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, ("--partitions", str(PARTITIONS)))
    node, client_port = cluster.addresses[0], cluster.client_addresses[0]
    with Client(cluster.seeds, timeout=5.0) as kv:
        wait_for("serving", lambda: kv.health(client_port, "kvstore.v1.KV") == "SERVING", 15)
        assert {s: kv.health(client_port, s) for s in ("", "kvstore.v1.KV")} == {
            "": "SERVING",
            "kvstore.v1.KV": "SERVING",
        }
        cluster_names = ("", "kvstore.v1.Peer", "kvstore.v1.Admin")
        assert [kv.health(node, s) for s in cluster_names] == ["SERVING"] * 3
        # Each port reports only its own services; the short name of old is gone.
        assert kv.health(client_port, "kvstore.v1.Peer") == "SERVICE_UNKNOWN"
        assert kv.health(node, "kvstore.v1.KV") == "SERVICE_UNKNOWN"
        assert kv.health(client_port, "kvstore.KV") == "SERVICE_UNKNOWN"
        assert kv.health(node, "kvstore.KV") == "SERVICE_UNKNOWN"
    # The CLI asks for a named service too (exit 0 only when SERVING).
    assert main(["health", "--node", client_port, "--service", "kvstore.v1.KV"]) == 0
    assert main(["health", "--node", node, "--service", "kvstore.KV"]) == 1


def test_drain_moves_clients_away_delivers_hints_and_exits(
    make_cluster: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # Four nodes, N=3: each key has one node that is not its primary, the fallback that
    # keeps a hint while a primary is down (with three nodes every node is a primary of
    # every key, and no hint is ever stored).
    cluster = make_cluster(4, QUIET)
    wait_converged(cluster)
    ring = Ring(cluster.addresses, PARTITIONS, 3)
    drained, victim = 1, 2
    d_address, v_address = cluster.addresses[drained], cluster.addresses[victim]
    # Keys of which the drained node is the only non-primary: with the victim down, the
    # drained node is their fallback and keeps a hint for the victim.
    keys = [
        key
        for key in (f"drain-{i}" for i in range(400))
        if d_address not in ring.primaries(key.encode())
    ][:6]
    assert len(keys) == 6
    with Client(cluster.seeds, timeout=5.0) as admin:
        cluster.stop_node(victim)
        wait_for("the victim held down", lambda: not holds_up(admin, d_address, v_address), 15)
        with Client([cluster.client_of(d_address)], timeout=5.0) as through_d:
            for key in keys:
                through_d.put(key, key.encode())
        wait_for(
            "hints on the drained node", lambda: admin.status(d_address).hints_pending >= 6, 10
        )
        cluster.start_node(victim)
        wait_for("the victim back up", lambda: holds_up(admin, d_address, v_address), 15)
        # No periodic delivery: the hints wait for the drain.
        assert admin.status(d_address).hints_pending >= 6
        assert not admin.local_get(v_address, keys[0]).found

        report = admin.drain(d_address, timeout=20.0, stay=True)
        assert report.hints_delivered >= 6 and report.hints_left == 0 and not report.exiting
        assert admin.status(d_address).hints_pending == 0
        for key in keys:
            assert key.encode() in admin.local_get(v_address, key).values

        d_client = cluster.client_of(d_address)
        assert admin.health(d_client, "kvstore.v1.KV") == "NOT_SERVING"
        assert admin.health(d_client, "") == "NOT_SERVING"
        # Still a replica: its cluster port serves peers (and operators).
        assert [admin.health(d_address, s) for s in ("", "kvstore.v1.Peer")] == ["SERVING"] * 2
        # A new client's stream to it is refused at once, as a node that cannot be reached.
        with (
            # Bound to that node alone (the ring would take it to the others).
            Client([d_client], timeout=5.0, route_by_ring=False) as only_d,
            pytest.raises(Unavailable, match="draining"),
        ):
            only_d.put("after-drain", b"refused")
        # A client of every node goes to the others: each start of its round robin.
        with Client(cluster.client_addresses, timeout=5.0) as every:
            for i in range(8):
                every.put(f"after-drain-{i}", b"v")
                assert every.get(f"after-drain-{i}").values == [b"v"]
        # Replication to the draining node goes on: it holds the keys it is a primary of.
        mine = [
            f"after-drain-{i}"
            for i in range(8)
            if d_address in ring.primaries(f"after-drain-{i}".encode())
        ]
        assert mine
        wait_for(
            "replicas written to the draining node",
            lambda: all(admin.local_get(d_address, k).found for k in mine),
            10,
        )

    # Drained again, through the CLI and without --stay: it answers, then exits cleanly.
    capsys.readouterr()
    assert main(["drain", "--node", d_address, "--drain-timeout", "10"]) == 0
    assert "stopping" in capsys.readouterr().out
    process = cluster.nodes[drained].process
    assert process is not None
    assert process.wait(timeout=30) == 0


def test_draining_refuses_new_calls_on_an_open_stream_as_draining(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, ("--partitions", str(PARTITIONS)))
    d_address = cluster.addresses[0]
    with (
        Client(cluster.seeds, timeout=5.0) as admin,
        Client([cluster.client_of(d_address)], timeout=5.0, route_by_ring=False) as only_d,
    ):
        only_d.put("before", b"v")  # its stream to the node is open from here on
        admin.drain(d_address, timeout=5.0, stay=True)
        with pytest.raises(Draining):
            only_d.get("before")


def test_repair_rebuilds_a_replica_that_lost_a_key(
    make_cluster: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = make_cluster(3, QUIET)
    ring = Ring(cluster.addresses, PARTITIONS, 3)
    victim = 0
    v_address = cluster.addresses[victim]
    key = "repair-me"
    partition = ring.partition_of_position(routed(key.encode()).position)
    with Client(cluster.seeds, timeout=5.0) as kv:
        kv.put(key, b"value")
        wait_for(
            "on every replica",
            lambda: all(kv.local_get(a, key).found for a in cluster.addresses),
            10,
        )
        # Behind the cluster's back: the victim loses all its data.
        cluster.stop_node(victim)
        shutil.rmtree(cluster.nodes[victim].data_dir)
        cluster.start_node(victim)
        wait_for("victim serving", lambda: kv.health(v_address) == "SERVING", 20)
        assert not kv.local_get(v_address, key).found

        # Bad partitions: refused, nothing runs.
        with pytest.raises(InvalidArgument, match="not in the ring"):
            kv.repair(v_address, [PARTITIONS])
        assert not kv.local_get(v_address, key).found
        assert kv.status(v_address).counters["ae_repairs"] == 0

    capsys.readouterr()
    assert main(["repair", "--node", v_address, "--partition", str(partition), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["partitions"] == 1 and report["exchanges"] == 2 and report["failed"] == 0
    assert int(report["keys_repaired"]) >= 1
    with Client(cluster.seeds, timeout=5.0) as kv:
        assert kv.local_get(v_address, key).values == [b"value"]
        # A repair of every partition it holds: nothing differs any more for this key.
        whole = kv.repair(v_address)
        assert whole.partitions == PARTITIONS and whole.exchanges == 2 * PARTITIONS
        assert whole.failed == 0


def test_repair_refuses_a_partition_the_node_does_not_hold(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(4, QUIET)
    ring = Ring(cluster.addresses, PARTITIONS, 3)
    node = cluster.addresses[0]
    foreign = next(p for p in range(PARTITIONS) if node not in ring.partition_primaries(p))
    with Client(cluster.seeds, timeout=5.0) as kv:
        with pytest.raises(InvalidArgument, match="holds no replica"):
            kv.repair(node, [0, foreign])
        assert kv.status(node).counters["ae_repairs"] == 0
    assert main(["repair", "--node", node, "--partition", str(foreign)]) == 2

"""What containers and orchestrators rely on: a newcomer started with `auto_join` joins by
itself, the grpc.health.v1 check turns SERVING once a node knows a ring, and `locate` names a
key's primaries as the ring places them."""

from __future__ import annotations

import pytest

from kvstore import Client
from kvstore.core.cluster import MemberStatus
from kvstore.errors import InvalidKey
from tests.conftest import ClusterFactory
from tests.integration.test_availability import FAST, wait_for

pytestmark = pytest.mark.integration


def test_auto_join_health_and_locate(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3, (*FAST, "--auto-join"), founders=1)
    seed = cluster.addresses[0]
    with Client([cluster.client_of(seed)], timeout=3.0) as kv:

        def all_active() -> bool:
            status = kv.status(seed)
            return (
                len(status.members) == 3
                and all(m.status == MemberStatus.ACTIVE.value for m in status.members)
                and not status.ring_pending
            )

        wait_for("both newcomers join without `kvstore join`", all_active, 30)
        # The seed commits first; the others learn the final ring by gossip a round later.
        wait_for(
            "every node routes by the three-member ring",
            lambda: all(len(kv.locate(a, "where").primaries) == 3 for a in cluster.addresses),
            10,
        )
        assert [kv.health(a) for a in cluster.addresses] == ["SERVING"] * 3
        kv.put("where", b"here")
        for asked in cluster.addresses:
            where = kv.locate(asked, "where")
            assert sorted(where.primaries) == sorted(cluster.addresses)  # N=3 of 3
            assert where.ring_epoch >= 1
            assert not where.pending_primaries
            for node in where.primaries:
                assert kv.local_get(node, "where").values == [b"here"]
        with pytest.raises(InvalidKey):
            kv.locate(seed, b"")


def test_a_standby_node_without_auto_join_stays_out(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(2, FAST, founders=1)
    with Client(cluster.client_addresses[:1], timeout=3.0) as kv:
        wait_for(
            "the newcomer learns the ring", lambda: kv.health(cluster.addresses[1]) == "SERVING", 15
        )
        statuses = {m.address: m.status for m in kv.status(cluster.addresses[0]).members}
        assert statuses.get(cluster.addresses[1], "standby") == MemberStatus.STANDBY.value
        assert kv.locate(cluster.addresses[1], "k").primaries == [cluster.addresses[0]]

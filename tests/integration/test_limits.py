"""Configured limits on real nodes: sibling cap, value size, request deadline."""

from __future__ import annotations

import signal
import time

import pytest

from kvstore import Client
from kvstore.errors import InvalidOption, TooManySiblings, Unavailable, ValueTooLarge
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration


def test_configured_limits_are_enforced_and_nothing_is_stored(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(
        3,
        extra_args=(
            "--max-siblings",
            "3",
            "--max-value-bytes",
            "100",
            "--request-timeout-ms",
            "1000",
        ),
    )
    with Client(cluster.seeds) as kv:
        for value in (b"a", b"b", b"c"):
            # Blind puts: each adds a sibling. w=3: every replica holds all three before the
            # fourth, whichever node coordinates it (with w=2 a lagging third replica could
            # coordinate the fourth put on two siblings and take it).
            kv.put("crowded", value, w=3)
        with pytest.raises(TooManySiblings):
            kv.put("crowded", b"d")
        for address in cluster.addresses:
            assert sorted(kv.local_get(address, "crowded").values) in ([b"a", b"b", b"c"], [])
        assert sorted(kv.get("crowded", r=3).values) == [b"a", b"b", b"c"]
        # Resolving with the context is always allowed.
        kv.put("crowded", b"one", context=kv.get("crowded", r=3).context)
        assert kv.get("crowded", r=3).values == [b"one"]

        kv.put("small", b"x" * 100)
        with pytest.raises(ValueTooLarge):
            kv.put("small-too-big", b"x" * 101)
        assert kv.get("small-too-big", r=3).found is False

    # 120 s is above max_request_timeout_ms (60 s).
    with Client(cluster.seeds, timeout=120.0) as patient, pytest.raises(InvalidOption):
        patient.get("small")


def test_a_paused_replica_makes_w3_fail_at_the_deadline(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    # Bound to node 0, which coordinates (the ring might send a key to the paused node).
    with Client(cluster.client_addresses[0], timeout=1.0, route_by_ring=False) as kv:
        kv.put("paused", b"before")
        cluster.signal_node(2, signal.SIGSTOP)
        try:
            kv.put("paused-w2", b"ok", w=2)  # two live replicas suffice
            started = time.monotonic()
            with pytest.raises(Unavailable) as failed:
                kv.put("paused-w3", b"v", w=3)
            waited = time.monotonic() - started
            # The call to the paused replica went out and was never answered ("deadline"), or,
            # when its stream was still opening as the pause came (a TLS handshake takes a
            # moment), never got out before the deadline ("not sent in time").
            assert "deadline" in str(failed.value) or "not sent in time" in str(failed.value)
            assert (failed.value.answered, failed.value.required) == (2, 3)
            assert 0.9 <= waited < 3.0
        finally:
            cluster.signal_node(2, signal.SIGCONT)

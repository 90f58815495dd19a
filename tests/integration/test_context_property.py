"""A property over a real 3-node cluster: 2 to 4 writers, each bound to a node, take turns in
a random order on one key; each carries what it was shown (kvchaos's Process: the join of
the contexts of its own reads and puts), with or without return_body. Judged by kvchaos's
checker, which trusts only what each writer was shown: every acknowledged value is in the
final read, or a writer that had been shown it wrote again after; and no view of the key
ever holds more siblings than there are writers.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore import Client
from kvstore.chaos.checker import ReplicaState, lost_writes, sibling_bound
from kvstore.chaos.history import History
from kvstore.chaos.workloads import Process
from kvstore.node.local_cluster import LocalCluster
from kvstore.storage.codec import decode_context, describe_clock
from tests.conftest import credentials

pytestmark = pytest.mark.integration

# (writer, what): "put" writes with what the writer was shown; "body" does too, with
# return_body (the context returned covers the values shown); "get" reads; "get+put" reads,
# then writes.
ACTIONS = ["put", "body", "get", "get+put"]
turns = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(ACTIONS)), min_size=1, max_size=14)


@pytest.fixture(scope="module")
def clients(cluster: LocalCluster) -> Iterator[list[Client]]:
    opened = [
        Client(address, timeout=5.0, **credentials(cluster)) for address in cluster.client_addresses
    ]
    yield opened
    for kv in opened:
        kv.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    writers=st.integers(2, 4),
    placement=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    plain_puts_only=st.booleans(),
    steps=turns,
)
def test_no_writer_drops_what_it_was_not_shown(
    clients: list[Client],
    writers: int,
    placement: list[int],
    plain_puts_only: bool,
    steps: list[tuple[int, str]],
) -> None:
    run_id = os.urandom(5).hex()
    key = f"{run_id}-prop"
    history = History()
    procs = [
        Process(w, f"node{placement[w]}", clients[placement[w]], history, random.Random(w), run_id)
        for w in range(writers)
    ]
    for who, action in steps:
        writer = procs[who % writers]
        if plain_puts_only and action == "body":
            action = "put"  # the run without return_body at all
        if action in ("get", "get+put"):
            read, got = writer.read(key)
            assert got is not None, read.error
            if action == "get":
                continue
        write, put = writer.write(key, return_body=action == "body")
        assert put is not None, write.error

    final = clients[0].get(key, r=3)
    final_states = {
        key: {
            "final read": ReplicaState(
                tuple(sorted(v.decode() for v in final.values)),
                describe_clock(decode_context(final.context, key.encode())),
            )
        }
    }
    assert lost_writes(history, final_states) == []
    violations, most = sibling_bound(history, final_states)
    assert violations == [] and most <= writers
    wrote = any(op.kind == "write" for op in history)
    assert len(final.values) <= writers and bool(final.values) == wrote

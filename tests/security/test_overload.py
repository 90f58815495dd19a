"""Overload is answered, not queued: past a node's bound on client requests in flight the
extra ones are refused at once with Overloaded (RESOURCE_EXHAUSTED) and a retry hint, and
the ones admitted complete."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from kvstore import Client
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.errors import Overloaded
from kvstore.node.local_cluster import LocalCluster
from kvstore.rpc.admission import Admission
from kvstore.rpc.status import RETRY_AFTER_KEY, error_from_rpc
from tests.conftest import free_ports

# Low enough that a burst on 2 cores exceeds it (the bound may not be below max_batch_items).
BOUND = 50
CONCURRENT = 2_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    args = ("--max-inflight-requests", str(BOUND), "--max-batch-items", str(BOUND))
    with LocalCluster(
        3, tmp_path_factory.mktemp("overload"), ports=free_ports(3), extra_args=args
    ) as started:
        started.start()
        yield started


def test_a_burst_past_the_bound_is_refused_with_a_retry_hint(cluster: LocalCluster) -> None:
    async def burst() -> tuple[Counter[str], list[grpc.aio.AioRpcError]]:
        async with grpc.aio.insecure_channel(cluster.client_addresses[0]) as channel:
            stub = pb_grpc.KVStub(channel)
            # Batches of 10 (a batch counts per item): a few in flight fill the bound.
            calls = [
                stub.PutMany(
                    pb.PutManyRequest(
                        items=[
                            pb.PutRequest(key=f"burst-{i}-{j}".encode(), value=b"v")
                            for j in range(10)
                        ]
                    ),
                    timeout=60,
                )
                for i in range(CONCURRENT)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        codes: Counter[str] = Counter()
        refused = []
        for outcome in outcomes:
            if isinstance(outcome, grpc.aio.AioRpcError):
                codes[outcome.code().name] += 1
                refused.append(outcome)
            else:
                codes["OK"] += 1
        return codes, refused

    codes, refused = asyncio.run(burst())
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["RESOURCE_EXHAUSTED"] > 0 and codes["OK"] >= BOUND // 10, codes
    error = error_from_rpc(refused[0])
    assert isinstance(error, Overloaded) and error.retry_after_ms > 0
    assert RETRY_AFTER_KEY in dict(refused[0].trailing_metadata() or ())
    with Client(cluster.seeds, timeout=10.0) as kv:
        counts = kv.status(cluster.addresses[0]).counters
        assert counts["requests_refused_overloaded"] == codes["RESOURCE_EXHAUSTED"]
        assert kv.put(b"after-the-burst", b"v")


def test_admission_counts_items_and_bytes() -> None:
    counters: Counter[str] = Counter()
    admission = Admission(max_requests=10, max_bytes=100, counters=counters)
    admission.enter(8, 10)
    with pytest.raises(Overloaded):
        admission.enter(3, 10)  # items past the bound
    admission.enter(2, 10)
    admission.leave(8, 10, 5.0)
    with pytest.raises(Overloaded):
        admission.enter(1, 91)  # bytes past the bound
    admission.leave(2, 10, 5.0)
    # Alone, a request of any size runs: a low bound never refuses everything.
    admission.enter(50, 1_000)
    admission.leave(50, 1_000, 5.0)
    assert (admission.requests, admission.bytes) == (0, 0)
    assert counters["requests_refused_overloaded"] == 2

"""Shared fixtures: real node processes on 127.0.0.1 (the integration tier)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kvstore.node.local_cluster import LocalCluster, free_ports

__all__ = ["free_ports"]  # tests import it from here


ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    """Start local clusters; every process a test started is stopped by pid afterwards."""
    started: list[LocalCluster] = []

    def make(
        count: int = 3, extra_args: tuple[str, ...] = (), founders: int | None = None
    ) -> LocalCluster:
        cluster = LocalCluster(
            count,
            tmp_path_factory.mktemp("cluster"),
            ports=free_ports(count),
            extra_args=extra_args,
            founders=founders,
        )
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()

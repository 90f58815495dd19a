from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore import Client
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import free_ports

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _secure_clients(secure_client_env: dict[str, str]) -> None:
    """The integration tier runs secure, as `kvstore local` and the docker cluster do: every
    client of its tests authenticates (admin certificate and token)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[LocalCluster]:
    """A 3-node secure cluster (N=3 R=2 W=2) shared by the tests of one module that kill
    nothing."""
    with LocalCluster(
        3, tmp_path_factory.mktemp("shared"), ports=free_ports(3), tls_dir=tls_dir
    ) as started:
        started.start()
        yield started


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.seeds, timeout=5.0) as kv:
        yield kv

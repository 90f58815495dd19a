"""Shared fixtures: real node processes on 127.0.0.1 (the integration tier)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore import TLS, Client
from kvstore.node.local_cluster import (
    LocalCluster,
    credentials_env,
    free_ports,
    local_material,
)

__all__ = ["free_ports"]  # tests import it from here


ClusterFactory = Callable[..., LocalCluster]


def credentials(cluster: LocalCluster) -> dict[str, Any]:
    """Client(..., **credentials(cluster)): the admin identity of a secure cluster, for
    clients made where the environment is not set (module-scoped fixtures)."""
    env = cluster.client_credentials()
    if not env:
        return {"tls": False}
    tls = TLS(env["KVSTORE_TLS_CA"], env["KVSTORE_TLS_CERT"], env["KVSTORE_TLS_KEY"])
    return {"tls": tls, "token": env["KVSTORE_TOKEN"]}


def wait_converged(cluster: LocalCluster, timeout_s: float = 30.0) -> None:
    """Until every node knows every node as active (gossip has spread right after a start):
    tests comparing the cluster's state before and after a probe must not see it converge."""
    deadline = time.monotonic() + timeout_s
    with Client(cluster.seeds, timeout=5.0, **credentials(cluster)) as kv:
        while True:
            statuses = [kv.status(a) for a in cluster.addresses]
            if all(
                sorted((m.address, m.status) for m in s.members)
                == sorted((a, "active") for a in cluster.addresses)
                for s in statuses
            ):
                return
            assert time.monotonic() < deadline, "the cluster's gossip did not converge"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the session's secure clusters: each cluster's node certificates are
    issued from it, so one client identity (the admin certificate and token) reaches all."""
    path = tmp_path_factory.mktemp("tls")
    local_material(path)
    return path


@pytest.fixture
def secure_client_env(tls_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """KVSTORE_TLS_* and KVSTORE_TOKEN for the admin identity, set in the environment: every
    Client (and CLI, kvbench or kvchaos process) a test starts then speaks TLS and
    authenticates, as a user of a secure cluster does."""
    material, tokens = local_material(tls_dir)
    env = credentials_env(material, tokens)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def make_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_dir: Path
) -> Iterator[ClusterFactory]:
    """Start local clusters (secure: TLS, certificates and tokens from `tls_dir`); every
    process a test started is stopped by pid afterwards."""
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
            tls_dir=tls_dir,
        )
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()

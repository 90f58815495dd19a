"""Nodes refuse the gossip of a peer whose first ring differs (other seeds), and say so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvstore import Client
from kvstore.node.local_cluster import local_material
from tests.conftest import ClusterFactory, free_ports

pytestmark = pytest.mark.integration
PROBLEM = "place keys differently"


def test_a_node_with_other_seeds_reports_the_disagreement(
    make_cluster: ClusterFactory, tmp_path: Path, tls_dir: Path
) -> None:
    cluster = make_cluster(3)
    address = f"127.0.0.1:{free_ports(1)[0]}"
    material, _ = local_material(tls_dir, [address])  # a member's certificate: the same CA
    log = tmp_path / "odd.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    with open(log, "wb") as out:
        odd = subprocess.Popen(
            [sys.executable, "-m", "kvstore.cli.main", "serve", "--node-id", "odd",
             "--listen", address, "--data-dir", str(tmp_path / "odd"),
             "--seeds", f"{cluster.cluster_seeds},{address}",
             "--tls-ca", str(material.ca), "--tls-cert", str(material.node_cert(address)),
             "--tls-key", str(material.node_key(address))],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while log.read_text().count(PROBLEM) < 3:  # one line per disagreeing peer
            assert odd.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "has members=" in log.read_text()
    finally:
        odd.send_signal(signal.SIGTERM)
        odd.wait(timeout=15)
    # The three agreeing nodes refused it: their ring is still theirs, without the odd node.
    with Client(cluster.client_addresses) as kv:
        for node in cluster.addresses:
            status = kv.status(node)
            assert status.ring_epoch == 1
            assert address not in {m.address for m in status.members}
            assert sorted(m.address for m in status.members) == sorted(cluster.addresses)
    assert any(PROBLEM in cluster.log_tail(i, lines=1000) for i in range(3))

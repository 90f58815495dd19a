"""kvchaos on the local backend: five node processes, every node-to-node link through the
in-repo fault proxy. The same scenarios as the docker tier (tests/docker), faster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvstore.chaos.local import LocalBackend
from kvstore.chaos.runner import run
from tests.chaos_scenarios import FAST_SETTINGS, SCENARIOS, assert_sound, cli_args

pytestmark = pytest.mark.integration

REPORTS = Path(os.environ.get("KVCHAOS_REPORTS", "build/chaos-reports"))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_on_local_processes(name: str, tmp_path: Path, tls_dir: Path) -> None:
    backend = LocalBackend(
        5, tmp_path / "nodes", node_args=cli_args(FAST_SETTINGS), tls_dir=tls_dir
    )
    try:
        report = run(backend, SCENARIOS[name], keep_history=True)
        links = backend.link_states()
    finally:
        backend.close()
    assert_sound(report, REPORTS, name)
    # Node-to-node traffic really went through the proxy (the nodes' peer_routes)...
    assert all(link.bytes_to_target > 0 for link in links.values()), links
    if SCENARIOS[name].nemesis in ("isolate", "split"):
        # ...and the partition cut it: connections aborted or held silent.
        assert any(link.aborted_connections + link.held_connections for link in links.values())

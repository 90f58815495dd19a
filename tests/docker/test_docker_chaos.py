"""The docker tier: build the node image with no registry (cluster/build-image), start a
five-node compose cluster (a seed and four scaled nodes that join by themselves), and run the
chaos scenarios through the docker backend (kill, pause, iptables partitions).

It runs whenever a Docker engine answers. Without one it is skipped, loudly: the skip reason
says so in pytest's summary (`-ra`) and a warning names it. CI on this project's machines has
an engine, so there it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.chaos.runner import run
from kvstore.client import Client
from kvstore.errors import KvError
from kvstore.node.local_cluster import free_ports
from tests.chaos_scenarios import PARTITIONS, SCENARIOS, assert_sound

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
REPORTS = Path(os.environ.get("KVCHAOS_REPORTS", ROOT / "build" / "chaos-reports"))
IMAGE = "kvstore:chaos-test"
NODES = 5


def _engine_answers() -> str | None:
    try:
        import docker
    except ImportError:  # a dev dependency: missing means a broken set-up, not "no engine"
        pytest.fail("the docker SDK is not installed (pip install -e '.[dev]')")
    try:
        client = docker.from_env()
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _compose() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("a docker engine answers but neither `docker compose` nor docker-compose exists")


@pytest.fixture(scope="module")
def project() -> Iterator[str]:
    problem = _engine_answers()
    if problem is not None:
        message = f"DOCKER TIER SKIPPED: no docker engine answers ({problem})"
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    began = time.monotonic()
    subprocess.run([str(ROOT / "cluster" / "build-image")], check=True, cwd=ROOT,
                   env={**os.environ, "IMAGE": IMAGE})  # fmt: skip
    built = time.monotonic()
    name = f"kvchaos{os.getpid()}"
    compose = [*_compose(), "-p", name, "-f", str(ROOT / "cluster" / "compose.yaml"),
               "-f", str(ROOT / "tests" / "docker" / "compose.fast.yaml")]  # fmt: skip
    env = {**os.environ, "KVSTORE_IMAGE": IMAGE, "KVSTORE_PORT": str(free_ports(1)[0])}
    try:
        subprocess.run([*compose, "up", "-d", "--scale", f"node={NODES - 1}"], check=True,
                       cwd=ROOT, env=env)  # fmt: skip
        _wait_for_ring(name, 120)
        print(f"docker tier: image built in {built - began:.0f} s,"
              f" cluster formed in {time.monotonic() - built:.0f} s")  # fmt: skip
        yield name
    finally:
        logs = subprocess.run([*compose, "logs", "--tail", "40"], cwd=ROOT, env=env,
                              capture_output=True, text=True)  # fmt: skip
        (REPORTS).mkdir(parents=True, exist_ok=True)
        (REPORTS / "docker-compose.log").write_text(logs.stdout + logs.stderr)
        subprocess.run([*compose, "down", "-v", "--timeout", "5"], cwd=ROOT, env=env)
        timing = {
            "image_build_s": round(built - began, 1),
            "tier_s": round(time.monotonic() - began, 1),
        }
        (REPORTS / "docker-tier-timing.json").write_text(json.dumps(timing) + "\n")
        print(f"docker tier: {timing}")


def _wait_for_ring(project: str, timeout_s: float) -> None:
    """Every node active in one ring with no change pending, as the seed sees it."""
    from kvstore.chaos.docker import DockerBackend

    deadline = time.monotonic() + timeout_s
    backend = DockerBackend(project)
    try:
        assert len(backend.nodes) == NODES, backend.nodes
        node = next(n for n in backend.nodes if n.startswith("seed:"))
        seed = backend.reachable(node)  # the cluster port, for the admin call
        with Client(
            [backend.client_reachable(node)], timeout=2.0, **backend.client_options()
        ) as kv:
            while True:
                try:
                    status = kv.status(seed)
                    active = [m for m in status.members if m.status == "active"]
                    if len(active) == NODES and not status.ring_pending:
                        assert sum(m.partitions_owned for m in active) == PARTITIONS
                        return
                except KvError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"no 5-node ring within {timeout_s} s")
                time.sleep(1.0)
    finally:
        backend.close()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_on_docker(project: str, name: str) -> None:
    from kvstore.chaos.docker import DockerBackend

    backend = DockerBackend(project)
    try:
        report = run(backend, SCENARIOS[name], keep_history=True)
    finally:
        backend.close()
    assert_sound(report, REPORTS, name)

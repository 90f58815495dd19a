"""The docker cluster files (cluster/): the compose file, the Kubernetes manifests and the
Dockerfile agree with each other and with the node's real settings.

Static checks only (no docker, no kubectl): every KVSTORE_* name is a real setting, and the
environment each container or pod would get builds a valid node configuration.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvstore.cli.main import build_parser
from kvstore.config import ENV_PREFIX, SETTINGS, load_node_config, parse_address

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
ENV_NAME = re.compile(r"\bKVSTORE_[A-Z0-9_]+\b")
# Variables compose reads from the caller's shell to fill in the file (image tag, host port);
# they are never set inside a container.
COMPOSE_INTERPOLATION = {"KVSTORE_IMAGE", "KVSTORE_PORT"}


def load_all(name: str) -> list[dict[str, Any]]:
    with open(CLUSTER / name) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def dockerfile_lines() -> list[str]:
    """Instructions with their continuation lines joined, comments dropped."""
    text = (CLUSTER / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile_lines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def setting_name(var: str) -> str:
    assert var.startswith(ENV_PREFIX)
    return var[len(ENV_PREFIX) :].lower()


def node_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}


# ---- Kubernetes ----


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    docs = load_all("k8s/kvstore.yaml")
    kinds = [doc["kind"] for doc in docs]
    assert sorted(kinds) == ["PodDisruptionBudget", "Service", "StatefulSet"]
    return {doc["kind"]: doc for doc in docs}


def container(sts: dict[str, Any]) -> dict[str, Any]:
    (only,) = sts["spec"]["template"]["spec"]["containers"]
    return only


def container_port(sts: dict[str, Any]) -> int:
    """The cluster port (named grpc; the other is the client port)."""
    (port,) = [p for p in container(sts)["ports"] if p["name"] == "grpc"]
    return int(port["containerPort"])


def pod_env(sts: dict[str, Any], pod: str, namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it: downward API values, then
    $(VAR) references to variables defined earlier in the list."""
    downward = {"metadata.name": pod, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for item in container(sts)["env"]:
        if "valueFrom" in item:
            env[item["name"]] = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
    return env


def test_statefulset_uses_the_headless_service(k8s: dict[str, dict[str, Any]]) -> None:
    service, sts = k8s["Service"], k8s["StatefulSet"]
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], sts["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    # The cluster port and the client port, each to a port the container declares.
    declared = {p["name"] for p in container(sts)["ports"]} | {container_port(sts)}
    ports = service["spec"]["ports"]
    assert [p["name"] for p in ports] == ["grpc", "client"]
    assert all(p["targetPort"] in declared for p in ports)


def test_seeds_are_stable_names_of_existing_pods(k8s: dict[str, dict[str, Any]]) -> None:
    sts = k8s["StatefulSet"]
    name, service = sts["metadata"]["name"], sts["spec"]["serviceName"]
    replicas = sts["spec"]["replicas"]
    env = pod_env(sts, f"{name}-0", "ns1")
    seeds = [parse_address(s) for s in env["KVSTORE_SEEDS"].split(",")]
    assert len(seeds) >= 3
    stable = re.compile(
        rf"^{re.escape(name)}-(\d+)\.{re.escape(service)}\.ns1\.svc\.cluster\.local$"
    )
    indices = []
    for seed in seeds:
        host, _, port = seed.rpartition(":")
        match = stable.match(host)
        assert match, f"{seed} is not a pod's stable DNS name"
        indices.append(int(match.group(1)))
        assert int(port) == container_port(sts)
    assert len(set(indices)) == len(indices)
    assert max(indices) < replicas


@pytest.mark.parametrize("namespace", ["default", "n" * 63], ids=["default", "longest-namespace"])
def test_every_pod_gets_a_valid_config(k8s: dict[str, dict[str, Any]], namespace: str) -> None:
    sts = k8s["StatefulSet"]
    name, service = sts["metadata"]["name"], sts["spec"]["serviceName"]
    seeds_seen = set()
    for index in range(sts["spec"]["replicas"]):
        pod = f"{name}-{index}"
        config = load_node_config(env=node_env(pod_env(sts, pod, namespace)))
        assert config.advertise == f"{pod}.{service}.{namespace}.svc.cluster.local:7100"
        assert config.listen.endswith(f":{container_port(sts)}")
        # A seed bootstraps the ring; any other pod joins it by itself.
        if config.bootstraps:
            seeds_seen.add(config.advertise)
        else:
            assert config.auto_join
    assert seeds_seen == set(config.seeds)


def named_port(sts: dict[str, Any], name: str) -> int:
    (port,) = [p for p in container(sts)["ports"] if p["name"] == name]
    return int(port["containerPort"])


def test_probes_are_native_grpc_probes_of_the_real_services(
    k8s: dict[str, dict[str, Any]],
) -> None:
    sts = k8s["StatefulSet"]
    env = pod_env(sts, "kvstore-0", "default")
    config = load_node_config(env=node_env(env))
    client_port, cluster_port = named_port(sts, "client"), named_port(sts, "grpc")
    assert config.client_listen.endswith(f":{client_port}")
    assert config.listen.endswith(f":{cluster_port}")
    # Kubelet's gRPC probe cannot speak TLS: the manifest must run its nodes without it.
    assert config.security.insecure
    for c in sts["spec"]["template"]["spec"]["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            assert set(c[probe]) & {"exec", "tcpSocket", "httpGet"} == set(), probe
        # Ready: the client service by its full name, on the client port.
        assert c["readinessProbe"]["grpc"] == {"port": client_port, "service": "kvstore.v1.KV"}
        # Alive: the Admin service, SERVING while the process serves (a newcomer waiting for
        # the ring is NOT_SERVING for clients and must not be restarted for it).
        assert c["livenessProbe"]["grpc"] == {"port": cluster_port, "service": "kvstore.v1.Admin"}


def test_pre_stop_drains_the_local_node_within_the_grace_period(
    k8s: dict[str, dict[str, Any]],
) -> None:
    sts = k8s["StatefulSet"]
    c = container(sts)
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    # Draining, not leaving: a preStop `kvstore leave` would empty the node on every restart.
    assert command[:2] == ["kvstore", "drain"] and "leave" not in command
    assert command[command.index("--node") + 1] == f"127.0.0.1:{container_port(sts)}"
    args = build_parser().parse_args(command[1:])
    assert args.command == "drain" and args.plaintext
    # The drain's bound, the CLI's start (~2 s) and the node's stop (2 s of grace) fit in the
    # pod's grace period, or the kubelet kills the node mid-drain.
    assert args.drain_timeout > 0
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= args.drain_timeout + 10


def test_data_volume_is_mounted_at_the_data_dir(k8s: dict[str, dict[str, Any]]) -> None:
    sts = k8s["StatefulSet"]
    env = pod_env(sts, "kvstore-0", "default")
    mounts = {m["name"]: m["mountPath"] for m in container(sts)["volumeMounts"]}
    claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
    assert [mounts.get(claim) for claim in claims] == [env["KVSTORE_DATA_DIR"]]


def test_pdb_selects_the_pods(k8s: dict[str, dict[str, Any]]) -> None:
    pdb, sts = k8s["PodDisruptionBudget"], k8s["StatefulSet"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


# ---- compose ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_all("compose.yaml")
    services: dict[str, Any] = doc["services"]
    assert set(services) == {"seed", "node"}
    return services


def test_seed_bootstraps_and_nodes_scale(compose: dict[str, Any]) -> None:
    seed, node = compose["seed"], compose["node"]
    seed_seeds = seed["environment"]["KVSTORE_SEEDS"].split(",")
    assert seed["environment"]["KVSTORE_ADVERTISE"] in seed_seeds
    for address in node["environment"]["KVSTORE_SEEDS"].split(","):
        assert parse_address(address).rpartition(":")[0] in compose
    assert "container_name" not in node
    assert "ports" not in node
    assert node["environment"]["KVSTORE_AUTO_JOIN"] in ("true", True)
    assert node["depends_on"]["seed"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["seed", "node"])
def test_both_have_healthcheck_and_net_admin(compose: dict[str, Any], service: str) -> None:
    svc = compose[service]
    # CMD-SHELL: the probe first reads the node's TLS credentials the entrypoint wrote.
    kind, command = svc["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "kvstore health --node 127.0.0.1:7100" in command
    assert command.startswith("[ ! -f /run/kvstore-probe.env ] || . /run/kvstore-probe.env;")
    assert "NET_ADMIN" in svc["cap_add"]


@pytest.mark.parametrize("service", ["seed", "node"])
def test_compose_containers_get_a_valid_config(compose: dict[str, Any], service: str) -> None:
    """Image defaults, then the service's environment, then the entrypoint's advertise."""
    env = node_env(dockerfile_env())
    env.update({k: str(v).lower() for k, v in compose[service]["environment"].items()})
    env.setdefault("KVSTORE_ADVERTISE", "0123456789ab:" + env["KVSTORE_LISTEN"].rpartition(":")[2])
    # The compose cluster runs secure: the entrypoint issues the node's certificate from the
    # shared volume and names it in these (CLUSTER_TLS_DIR itself is not a setting).
    assert compose[service]["environment"]["CLUSTER_TLS_DIR"] == "/tls"
    for name in ("KVSTORE_TLS_CA", "KVSTORE_TLS_CERT", "KVSTORE_TLS_KEY"):
        env[name] = f"/tls/{name.lower()}.pem"
    config = load_node_config(env=env)
    assert config.bootstraps == (service == "seed")
    assert config.data_dir == "/data"


# ---- every KVSTORE_* name is a real setting ----


def env_names_in(path: Path) -> set[str]:
    return set(ENV_NAME.findall(path.read_text()))


@pytest.mark.parametrize(
    "name", ["compose.yaml", "k8s/kvstore.yaml", "Dockerfile", "entrypoint.sh"]
)
def test_env_names_are_real_settings(name: str) -> None:
    names = env_names_in(CLUSTER / name)
    if name == "compose.yaml":
        names -= COMPOSE_INTERPOLATION
    assert names
    unknown = sorted(n for n in names if setting_name(n) not in SETTINGS)
    assert not unknown, f"{name} names settings that do not exist: {unknown}"


def test_compose_interpolation_names_stay_out_of_containers(compose: dict[str, Any]) -> None:
    for svc in compose.values():
        assert not COMPOSE_INTERPOLATION & set(svc["environment"])


# ---- Dockerfile and scripts ----


def test_dockerfile_builds_offline() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    assert text.splitlines()[0] == "ARG BASE=python:3.11-slim"
    # A `# syntax=` directive makes BuildKit pull its frontend image from a registry.
    assert not re.search(r"^\s*#\s*syntax\s*=", text, re.IGNORECASE | re.MULTILINE)
    lines = dockerfile_lines()
    assert any(line.startswith("FROM ${BASE}") for line in lines)
    assert any(line.startswith("RUN ") and "--no-index" in line for line in lines)
    assert any(line.startswith("HEALTHCHECK ") and "kvstore health" in line for line in lines)
    assert dockerfile_env()["KVSTORE_LISTEN"].endswith(":7100")


@pytest.mark.parametrize("name", ["base-image", "build-image", "entrypoint.sh"])
def test_scripts_are_executable(name: str) -> None:
    assert os.access(CLUSTER / name, os.X_OK)


def test_ports_picked_for_a_local_cluster_avoid_those_picked_before() -> None:
    # Ports picked are free again until listened on; gRPC listens with SO_REUSEPORT, so a
    # port given to two nodes would be shared by both. Half the range is excluded here: a
    # pick that ignored `exclude` would land in it about every other port.
    from kvstore.node.local_cluster import free_ports

    excluded = set(range(20_000, 32_000, 2))
    picked = free_ports(20, exclude=excluded)
    assert len(set(picked)) == 20
    assert not excluded & set(picked)

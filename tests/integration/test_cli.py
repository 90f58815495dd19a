"""The kvstore command as a person uses it: serve, local, get/put/delete, debug local-get."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvstore import TLS, Client
from kvstore.errors import KvError
from kvstore.node.local_cluster import LocalCluster
from tests.conftest import free_ports

pytestmark = pytest.mark.integration
KVSTORE = [sys.executable, "-m", "kvstore.cli.main"]


def kvstore(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KVSTORE, *args], input=stdin.decode() if stdin else None,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_put_get_delete_from_the_command_line(cluster: LocalCluster) -> None:
    seeds = ("--seeds", cluster.seeds)
    put = kvstore("put", "cli-key", "hello", *seeds, "--json")
    assert put.returncode == 0, put.stderr
    context = json.loads(put.stdout)["context"]

    got = kvstore("get", "cli-key", *seeds)
    assert got.returncode == 0 and got.stdout.splitlines()[0] == "hello"

    replaced = kvstore("put", "cli-key", "-", "--context", context, *seeds, stdin=b"from stdin")
    assert replaced.returncode == 0, replaced.stderr
    as_json = json.loads(kvstore("get", "cli-key", *seeds, "--json").stdout)
    assert [base64.b64decode(v) for v in as_json["values_b64"]] == [b"from stdin"]

    local = kvstore("debug", "local-get", "cli-key", "--node", cluster.addresses[1], *seeds)
    assert local.returncode == 0

    deleted = kvstore("delete", "cli-key", "--context", as_json["context"], *seeds)
    assert deleted.returncode == 0, deleted.stderr
    missing = kvstore("get", "cli-key", *seeds)
    assert missing.returncode == 1 and "(not found)" in missing.stdout


def test_put_return_body_prints_the_siblings_and_a_context_covering_them(
    cluster: LocalCluster,
) -> None:
    seeds = ("--seeds", cluster.seeds)
    assert kvstore("put", "cli-body", "one", *seeds).returncode == 0
    assert kvstore("put", "cli-body", "two", *seeds).returncode == 0  # blind: a sibling
    body = kvstore("put", "cli-body", "three", "--return-body", *seeds)
    assert body.returncode == 0, body.stderr
    lines = body.stdout.splitlines()
    assert lines[0] == "ok" and sorted(lines[1:4]) == ["one", "three", "two"]
    assert lines[4].startswith("context: ")
    as_json = json.loads(
        kvstore("put", "cli-body", "four", "--return-body", "--json", *seeds).stdout
    )
    assert sorted(base64.b64decode(v) for v in as_json["values_b64"]) == [
        b"four", b"one", b"three", b"two"
    ]  # fmt: skip
    resolved = kvstore("put", "cli-body", "all", "--context", as_json["context"], *seeds)
    assert resolved.returncode == 0, resolved.stderr
    assert kvstore("get", "cli-body", *seeds).stdout.splitlines()[0] == "all"
    plain = json.loads(kvstore("put", "cli-body", "x", "--json", *seeds).stdout)
    assert list(plain) == ["context"]


def test_command_line_errors_are_typed_and_nonzero(cluster: LocalCluster) -> None:
    too_long = kvstore("put", "k" * 1025, "v", "--seeds", cluster.seeds)
    assert too_long.returncode == 2 and "InvalidKey" in too_long.stderr
    bad_context = kvstore(
        "put", "k", "v", "--context", "bm90IGEgY29udGV4dA==", "--seeds", cluster.seeds
    )
    assert bad_context.returncode == 2 and "InvalidContext" in bad_context.stderr
    nobody = kvstore("get", "k", "--seeds", f"127.0.0.1:{free_ports(1)[0]}", "--timeout", "1")
    assert nobody.returncode == 2 and "TransportError" in nobody.stderr


def test_serve_reads_toml_and_env_overrides_it(tmp_path: Path) -> None:
    cluster_port, port = free_ports(2)
    config = tmp_path / "node.toml"
    config.write_text(
        f'node_id = "from-file"\nlisten = "127.0.0.1:{cluster_port}"\n'
        f'client_listen = "127.0.0.1:{port}"\n'
        f'data_dir = "{tmp_path / "data"}"\nn = 1\nr = 1\nw = 1\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    env["KVSTORE_NODE_ID"] = "from-env"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*KVSTORE, "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 20
        while "ready on" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "kvstore node from-env ready" in log.read_text()
        with Client(f"127.0.0.1:{port}", tls=False) as kv:  # no TLS material given
            kv.put("single", b"node")
            assert kv.get("single").values == [b"node"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

    unknown = tmp_path / "bad.toml"
    unknown.write_text('listen = "127.0.0.1:1"\nreplicas = 3\n')
    refused = kvstore("serve", "--config", str(unknown))
    assert (
        refused.returncode == 2
        and "unknown settings" in refused.stderr
        and "replicas" in refused.stderr
    )


def test_local_cluster_starts_prints_ports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = free_ports(3)
    base = ports[0]
    # `kvstore local` takes consecutive ports from --base-port; find three free ones.
    for candidate in range(base, base + 200):
        wanted = [*range(candidate, candidate + 3), *range(candidate + 1000, candidate + 1003)]
        if all(p not in _ports_in_use() for p in wanted):
            base = candidate
            break
    process = subprocess.Popen(
        [*KVSTORE, "local", "--nodes", "3", "--base-port", str(base), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while not any("Ctrl-C" in line for line in lines):
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        lines.append(process.stdout.readline())
    output = "".join(lines)
    addresses = [f"127.0.0.1:{base + 1000 + i}" for i in range(3)]  # the client ports
    for address in (*addresses, *(f"127.0.0.1:{base + i}" for i in range(3))):
        assert address in output
    node_pids = [int(line.split("pid")[1].split()[0]) for line in lines if " pid " in line]
    assert len(node_pids) == 3
    # Secure by default: the CA, client certificates and tokens it made, in client.env.
    assert "source " in output
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in (tmp_path / "tls" / "client.env").read_text().splitlines()
    )
    with Client(
        ",".join(addresses), tls=TLS(env["KVSTORE_TLS_CA"]), token=env["KVSTORE_TOKEN"]
    ) as kv:
        kv.put("local", b"works")
        assert kv.get("local").values == [b"works"]
    with Client(",".join(addresses), tls=False) as plain, pytest.raises(KvError):
        plain.get("local")

    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopped" in rest
    for pid in node_pids:
        assert not _alive(pid), f"node pid {pid} still running"
    assert (tmp_path / "node-0").is_dir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; check its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _ports_in_use() -> set[int]:
    used = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            used.add(int(row.split()[1].rsplit(":", 1)[1], 16))
    return used


def test_certs_makes_material_a_node_starts_with(tmp_path: Path) -> None:
    """`kvstore certs` (what the protected-mode refusal points to) makes a CA, a node
    certificate and tokens a node serves with; a second run reuses them."""
    cluster_port, client_port = free_ports(2)
    address = f"127.0.0.1:{cluster_port}"
    made = kvstore("certs", "--dir", str(tmp_path / "tls"), "--node", address)
    assert made.returncode == 0, made.stderr
    token = next(
        line.rsplit(" ", 1)[1] for line in made.stdout.splitlines() if "new write token" in line
    )
    again = kvstore("certs", "--dir", str(tmp_path / "tls"), "--node", address)
    assert again.returncode == 0 and "new write token" not in again.stdout
    bad = kvstore("certs", "--dir", str(tmp_path / "tls"), "--client", "x=node")
    assert bad.returncode == 2 and "SecurityError" in bad.stderr
    tls = tmp_path / "tls"
    stem = address.replace(":", "_")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    with open(tmp_path / "node.log", "wb") as out:
        node = subprocess.Popen(
            [*KVSTORE, "serve", "--listen", address, "--client-listen",
             f"127.0.0.1:{client_port}", "--data-dir", str(tmp_path / "data"),
             "--n", "1", "--r", "1", "--w", "1",
             "--tls-ca", str(tls / "ca.pem"), "--tls-cert", str(tls / "nodes" / f"{stem}.pem"),
             "--tls-key", str(tls / "nodes" / f"{stem}-key.pem"),
             "--auth-tokens", str(tls / "tokens.txt")],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "ready on" not in (tmp_path / "node.log").read_text():
            assert node.poll() is None, (tmp_path / "node.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        secure = TLS(str(tls / "ca.pem"))
        with Client(f"127.0.0.1:{client_port}", tls=secure, token=token) as kv:
            kv.put("certs", b"work")
            assert kv.get("certs").values == [b"work"]
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=15) == 0

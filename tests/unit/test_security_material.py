"""kvstore.security: the cluster's certificates and tokens round-trip, and really do mutual TLS."""

from __future__ import annotations

import asyncio
import ipaddress
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from kvstore.errors import ConfigError
from kvstore.security import (
    ROLES,
    Identity,
    SecurityError,
    TokenTable,
    identity_from_cert,
    issue_client_cert,
    issue_node_cert,
    make_ca,
    new_token,
    token_digest,
    verify_issued_by,
    write_cluster_material,
)
from kvstore.security import certs as certs_module


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return make_ca()


@pytest.fixture(scope="module")
def other_ca() -> tuple[bytes, bytes]:
    return make_ca("some other CA")


def _san(cert_pem: bytes) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _usages(cert_pem: bytes) -> set[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


# ---- certificates ----


def test_security_error_is_a_config_error() -> None:
    assert issubclass(SecurityError, ConfigError)
    assert ROLES == ("read", "write", "admin", "node")


def test_node_cert_round_trip(ca: tuple[bytes, bytes]) -> None:
    cert, key = issue_node_cert(*ca, "10.0.0.5:7101", ["10.0.0.5", "node-1.kv", "::1"])
    assert b"BEGIN PRIVATE KEY" in key
    identity = identity_from_cert(cert)
    assert identity == Identity("10.0.0.5:7101", frozenset({"node"}), "10.0.0.5:7101")
    assert identity.allows("node") and not identity.allows("read")
    san = _san(cert)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "kvstore://node/10.0.0.5:7101",
        "kvstore://role/node",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["node-1.kv"]
    assert _usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert verify_issued_by(cert, ca[0])


@pytest.mark.parametrize(
    ("role", "expanded"),
    [
        ("read", {"read"}),
        ("write", {"read", "write"}),
        ("admin", {"read", "write", "admin"}),
    ],
)
def test_client_cert_roles_expand(ca: tuple[bytes, bytes], role: str, expanded: set[str]) -> None:
    cert, _key = issue_client_cert(*ca, "alice", role)
    identity = identity_from_cert(cert)
    assert identity == Identity("alice", frozenset(expanded), None)
    assert _usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not identity.allows("node")


def test_identity_is_cached(ca: tuple[bytes, bytes]) -> None:
    cert, _key = issue_client_cert(*ca, "bob", "read")
    assert identity_from_cert(cert) is identity_from_cert(bytes(cert))


@pytest.mark.parametrize(
    ("name", "role"), [("alice", "node"), ("alice", "root"), ("../etc", "read"), ("a b", "read")]
)
def test_client_cert_refuses_bad_role_or_name(
    ca: tuple[bytes, bytes], name: str, role: str
) -> None:
    with pytest.raises(SecurityError):
        issue_client_cert(*ca, name, role)


@pytest.mark.parametrize("address", ["127.0.0.1", "host:0", "a/b:1", "host:99999", " h:1"])
def test_node_cert_refuses_bad_address(ca: tuple[bytes, bytes], address: str) -> None:
    with pytest.raises(SecurityError, match="HOST:PORT"):
        issue_node_cert(*ca, address, ["127.0.0.1"])


def test_node_cert_needs_hosts(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(SecurityError, match="hosts"):
        issue_node_cert(*ca, "127.0.0.1:1", [])


def test_cert_from_another_ca_fails_verification(
    ca: tuple[bytes, bytes], other_ca: tuple[bytes, bytes]
) -> None:
    cert, _key = issue_client_cert(*other_ca, "eve", "admin")
    assert verify_issued_by(cert, other_ca[0])
    assert not verify_issued_by(cert, ca[0])
    assert not verify_issued_by(b"not a certificate", ca[0])
    with pytest.raises(SecurityError, match="CA certificate"):
        verify_issued_by(cert, b"not a certificate")


def test_mismatched_ca_pair_is_refused(
    ca: tuple[bytes, bytes], other_ca: tuple[bytes, bytes]
) -> None:
    with pytest.raises(SecurityError, match="does not belong"):
        issue_client_cert(ca[0], other_ca[1], "alice", "read")
    node_cert, node_key = issue_node_cert(*ca, "127.0.0.1:1", ["127.0.0.1"])
    with pytest.raises(SecurityError, match="not a CA"):
        issue_client_cert(node_cert, node_key, "alice", "read")


def test_inconsistent_node_cert_is_refused(ca: tuple[bytes, bytes]) -> None:
    # role node without the address it speaks for: a member that could claim any address
    cert, _key = certs_module._issue(
        *ca,
        "x",
        [x509.UniformResourceIdentifier("kvstore://role/node")],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        1,
    )
    with pytest.raises(SecurityError, match="inconsistent"):
        identity_from_cert(cert)
    with pytest.raises(SecurityError, match="PEM"):
        identity_from_cert(b"garbage")


def test_unknown_role_uri_grants_nothing(ca: tuple[bytes, bytes]) -> None:
    cert, _key = certs_module._issue(
        *ca,
        "x",
        [x509.UniformResourceIdentifier("kvstore://role/superuser")],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        1,
    )
    assert identity_from_cert(cert) == Identity("x", frozenset(), None)


# ---- tokens ----


def test_tokens_and_digests() -> None:
    token = new_token()
    assert len(token) >= 43 and token != new_token()
    assert len(token_digest(token)) == 64 and token_digest(token) == token_digest(token)


def test_token_table_load_and_identify(tmp_path: Path) -> None:
    reader, admin = new_token(), new_token()
    path = tmp_path / "tokens.txt"
    path.write_text(
        "# who may do what\n"
        "\n"
        f"{TokenTable.line('reader', 'read', reader)}\n"
        f"  ops admin {token_digest(admin).upper()}  # upper-case hex is fine\n"
    )
    table = TokenTable.load(path)
    assert len(table) == 2 and table.names == ("reader", "ops")
    assert table.identify(reader) == Identity("reader", frozenset({"read"}), None)
    ops = table.identify(admin)
    assert ops is not None and ops.name == "ops" and ops.allows("write")
    assert table.identify(new_token()) is None
    assert table.identify("") is None
    assert reader not in path.read_text() and admin not in path.read_text()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("reader read", "expected 'NAME ROLE SHA256HEX'"),
        ("reader read abc", "bad digest"),
        (f"reader root {'0' * 64}", "bad client role"),
        (f"node1 node {'0' * 64}", "bad client role"),
        (f"a/b read {'0' * 64}", "bad token name"),
        (f"reader read {'0' * 64}\nreader write {'1' * 64}", "duplicate token name"),
        (f"a read {'0' * 64}\nb write {'0' * 64}", "same digest"),
    ],
)
def test_token_table_malformed_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# header\n" + line + "\n")
    with pytest.raises(SecurityError, match=message) as caught:
        TokenTable.load(path)
    # the message names the file and the line, so an operator can fix it
    assert f"{path}:{line.count(chr(10)) + 2}:" in str(caught.value)


def test_token_table_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="cannot read token file"):
        TokenTable.load(tmp_path / "missing.txt")


# ---- a cluster's material on disk ----


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_cluster_material(tmp_path: Path) -> None:
    nodes = ["127.0.0.1:7101", "127.0.0.1:7102"]
    made = write_cluster_material(tmp_path / "tls", nodes, clients={"admin": "admin", "ci": "read"})
    assert made.ca == tmp_path / "tls" / "ca.pem" and _mode(made.ca_key) == 0o600
    assert made.node_cert(nodes[0]) == tmp_path / "tls" / "nodes" / "127.0.0.1_7101.pem"
    assert made.node_key(nodes[0]) == tmp_path / "tls" / "nodes" / "127.0.0.1_7101-key.pem"
    ca_pem = made.ca.read_bytes()
    for address in nodes:
        assert _mode(made.node_key(address)) == 0o600
        cert = made.node_cert(address).read_bytes()
        assert verify_issued_by(cert, ca_pem)
        assert identity_from_cert(cert).node == address
        assert {str(h) for h in _san(cert).get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
        assert _san(cert).get_values_for_type(x509.DNSName) == ["localhost"]
    assert identity_from_cert(made.client_cert("ci").read_bytes()).roles == {"read"}
    assert _mode(made.client_key("admin")) == 0o600
    assert set(made.tokens) == {"read", "write", "admin"}
    table = TokenTable.load(made.tokens_file)
    assert _mode(made.tokens_file) == 0o600
    for role, name in (("read", "reader"), ("write", "writer"), ("admin", "admin")):
        identity = table.identify(made.tokens[role])
        assert identity is not None and identity.name == name and identity.allows(role)
        assert made.tokens[role] not in made.tokens_file.read_text()
    assert not list((tmp_path / "tls").rglob("*.tmp"))


def test_write_cluster_material_is_idempotent(tmp_path: Path) -> None:
    first = write_cluster_material(tmp_path, ["127.0.0.1:7101"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = write_cluster_material(tmp_path, ["127.0.0.1:7101"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert again.tokens == {}  # only digests were kept: earlier tokens stay valid, unrevealed
    assert TokenTable.load(again.tokens_file).identify(first.tokens["admin"]) is not None

    grown = write_cluster_material(tmp_path, ["127.0.0.1:7101", "127.0.0.1:7102"])
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: after[p] for p in before} == before  # nothing reissued
    assert set(after) - set(before) == {
        grown.node_cert("127.0.0.1:7102"),
        grown.node_key("127.0.0.1:7102"),
    }
    assert verify_issued_by(after[grown.node_cert("127.0.0.1:7102")], before[first.ca])


def test_write_cluster_material_refuses_foreign_or_unissuable(
    tmp_path: Path, other_ca: tuple[bytes, bytes]
) -> None:
    made = write_cluster_material(tmp_path, ["127.0.0.1:7101"])
    foreign, _key = issue_node_cert(*other_ca, "127.0.0.1:7101", ["127.0.0.1"])
    made.node_cert("127.0.0.1:7101").write_bytes(foreign)
    with pytest.raises(SecurityError, match="not issued by"):
        write_cluster_material(tmp_path, ["127.0.0.1:7101"])
    made.node_cert("127.0.0.1:7101").unlink()
    made.ca_key.unlink()
    with pytest.raises(SecurityError, match=r"ca-key\.pem is missing"):
        write_cluster_material(tmp_path, ["127.0.0.1:7101"])


# ---- the material really does mutual TLS with gRPC ----

_METHOD = "/kvstore.test.Tls/Who"


async def _call_over_mtls(
    server_pair: tuple[bytes, bytes],
    ca_pem: bytes,
    client_pair: tuple[bytes, bytes],
    seen: dict[str, list[bytes]],
) -> bytes:
    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.update(context.auth_context())
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "kvstore.test.Tls", {"Who": grpc.unary_unary_rpc_method_handler(who)}
            )
        ]
    )
    cert, key = server_pair
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        client_cert, client_key = client_pair
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=client_key, certificate_chain=client_cert
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials) as channel:
            reply: bytes = await channel.unary_unary(_METHOD)(b"hello", timeout=10)
            return reply
    finally:
        await server.stop(None)


def test_mutual_tls_with_grpc(ca: tuple[bytes, bytes]) -> None:
    server_pair = issue_node_cert(*ca, "127.0.0.1:7101", ("127.0.0.1",))
    client_pair = issue_node_cert(*ca, "127.0.0.1:7102", ("127.0.0.1",))
    seen: dict[str, list[bytes]] = {}
    assert asyncio.run(_call_over_mtls(server_pair, ca[0], client_pair, seen)) == b"hello"
    # What the wiring reads per RPC; the other keys are listed so a gRPC upgrade that
    # renames them shows up here first.
    assert {
        "transport_security_type",
        "x509_pem_cert",
        "x509_common_name",
        "x509_subject_alternative_name",
        "peer_uri",
        "security_level",
    } <= set(seen)
    assert seen["transport_security_type"] == [b"ssl"]
    assert seen["x509_common_name"] == [b"127.0.0.1:7102"]
    (peer_pem,) = seen["x509_pem_cert"]
    assert peer_pem == client_pair[0]
    identity = identity_from_cert(peer_pem)
    assert identity.node == "127.0.0.1:7102" and identity.allows("node")


def test_mutual_tls_refuses_a_client_from_another_ca(
    ca: tuple[bytes, bytes], other_ca: tuple[bytes, bytes]
) -> None:
    server_pair = issue_node_cert(*ca, "127.0.0.1:7101", ("127.0.0.1",))
    intruder = issue_client_cert(*other_ca, "eve", "admin")
    seen: dict[str, list[bytes]] = {}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(_call_over_mtls(server_pair, ca[0], intruder, seen))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert seen == {}  # the handler never ran


def test_compose_v1_container_names_are_addresses_and_hosts() -> None:
    """docker-compose v1 names containers project_node_1: nodes advertise those names, so
    their certificates must carry them (underscores included)."""
    ca, ca_key = make_ca()
    cert, _ = issue_node_cert(ca, ca_key, "proj_node_1:7100", ["proj_node_1", "127.0.0.1"])
    assert identity_from_cert(cert).node == "proj_node_1:7100"

"""A cluster's TLS material and tokens laid out in one directory, made once and then reused."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from kvstore.security.certs import (
    check_address,
    issue_client_cert,
    issue_node_cert,
    make_ca,
    verify_issued_by,
)
from kvstore.security.identity import SecurityError, check_client_role, check_name
from kvstore.security.tokens import TokenTable, new_token

# The token made for each client role, by the name it is registered under in tokens.txt.
TOKEN_NAMES: Mapping[str, str] = MappingProxyType(
    {"read": "reader", "write": "writer", "admin": "admin"}
)

_DEFAULT_CLIENTS: Mapping[str, str] = MappingProxyType({"admin": "admin"})

_PRIVATE = 0o600  # keys and the token table: the owner only
_PUBLIC = 0o644  # certificates are public by design


def _file_stem(address: str) -> str:
    # ':' is not allowed in Windows file names and reads badly in shells; the address itself
    # is already checked to hold nothing else that a path could trip on.
    return check_address(address).replace(":", "_")


@dataclass(frozen=True)
class ClusterMaterial:
    """Where write_cluster_material put everything, and the tokens it minted (in clear)."""

    directory: Path
    nodes: tuple[str, ...]
    clients: Mapping[str, str]  # client certificate name -> role
    # role -> token, only for tokens minted by this call: tokens.txt keeps digests, so a
    # token made by an earlier run cannot be recovered here.
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def tokens_file(self) -> Path:
        return self.directory / "tokens.txt"

    def node_cert(self, address: str) -> Path:
        return self.directory / "nodes" / f"{_file_stem(address)}.pem"

    def node_key(self, address: str) -> Path:
        return self.directory / "nodes" / f"{_file_stem(address)}-key.pem"

    def client_cert(self, name: str) -> Path:
        return self.directory / "clients" / f"{check_name(name, 'client')}.pem"

    def client_key(self, name: str) -> Path:
        return self.directory / "clients" / f"{check_name(name, 'client')}-key.pem"


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start: a key is never readable by others, not
    even for a moment, and a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read {path}: {exc}") from exc


def write_cluster_material(
    directory: str | os.PathLike[str],
    node_addresses: Sequence[str],
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    clients: Mapping[str, str] = _DEFAULT_CLIENTS,
) -> ClusterMaterial:
    """Make (or complete) a cluster's CA, node and client certificates and its token table.

    Idempotent: an existing ca.pem is reused with its key, existing certificates are kept (if
    that CA issued them), and only what is missing is issued, so a node restarted with more
    peers, or a rerun of the same command, leaves working material working.
    """
    root = Path(directory)
    for address in node_addresses:
        check_address(address)
    for name, role in clients.items():
        check_name(name, "client")
        check_client_role(role)
    material = ClusterMaterial(root, tuple(node_addresses), MappingProxyType(dict(clients)))

    # The key is written before the certificate: ca.pem is what marks a CA as made, so a
    # crash in between leaves no CA rather than a CA without its key.
    if material.ca.exists():
        ca_cert = _read(material.ca)
        ca_key: bytes | None = _read(material.ca_key) if material.ca_key.exists() else None
    else:
        ca_cert, ca_key = make_ca()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(material.ca_key, ca_key, _PRIVATE)
        _write(material.ca, ca_cert, _PUBLIC)

    def need_key() -> bytes:
        if ca_key is None:
            raise SecurityError(
                f"{material.ca_key} is missing: the CA in {material.ca} cannot issue the "
                "certificates that are missing"
            )
        return ca_key

    def missing(cert_path: Path, key_path: Path) -> bool:
        if not (cert_path.exists() and key_path.exists()):
            return True
        if not verify_issued_by(_read(cert_path), ca_cert):
            raise SecurityError(
                f"{cert_path} was not issued by {material.ca} or has expired: remove it "
                "(and its key) to have it issued again"
            )
        return False

    def store(cert_path: Path, key_path: Path, pair: tuple[bytes, bytes]) -> None:
        _write(key_path, pair[1], _PRIVATE)
        _write(cert_path, pair[0], _PUBLIC)

    for address in node_addresses:
        cert_path, key_path = material.node_cert(address), material.node_key(address)
        if missing(cert_path, key_path):
            store(cert_path, key_path, issue_node_cert(ca_cert, need_key(), address, hosts))
    for name, role in clients.items():
        cert_path, key_path = material.client_cert(name), material.client_key(name)
        if missing(cert_path, key_path):
            store(cert_path, key_path, issue_client_cert(ca_cert, need_key(), name, role))

    tokens = _ensure_tokens(material.tokens_file)
    return ClusterMaterial(material.directory, material.nodes, material.clients, tokens)


def _ensure_tokens(path: Path) -> dict[str, str]:
    """Add a token for each client role whose name tokens.txt lacks; the new ones, by role."""
    text = _read(path).decode("utf-8", "replace") if path.exists() else ""
    table = TokenTable.parse(text, str(path))  # refuse to append to a table that is broken
    minted: dict[str, str] = {}
    lines: list[str] = []
    for role, name in TOKEN_NAMES.items():
        if name in table.names:
            continue
        token = new_token()
        minted[role] = token
        lines.append(TokenTable.line(name, role, token))
    if lines:
        if text and not text.endswith("\n"):
            text += "\n"
        if not text:
            text = "# NAME ROLE SHA256HEX: the SHA-256 of each bearer token, never the token\n"
        _write(path, (text + "\n".join(lines) + "\n").encode("utf-8"), _PRIVATE)
    return minted

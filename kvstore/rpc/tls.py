"""The node's TLS: its certificate on both ports, the cluster CA to check callers, and the
same certificate presented to peers (mutual TLS between members).

* cluster port: a client certificate from the cluster CA is required (gRPC refuses the
  handshake otherwise); the Peer service then takes only member certificates, the Admin
  service only operators' (kvstore.rpc.auth);
* client port: server TLS; a client is known by its token, or (with `client_certs`) by
  the client certificate the port then requires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from kvstore.config import Security
from kvstore.errors import ConfigError
from kvstore.rpc.auth import Guard
from kvstore.security import TokenTable


@dataclass(frozen=True)
class NodeTls:
    ca: bytes
    cert: bytes
    key: bytes
    tokens: TokenTable | None
    client_certs: bool = False

    @classmethod
    def load(cls, security: Security) -> NodeTls | None:
        """The material the settings name (None: the node runs without TLS)."""
        if not security.tls:
            return None
        tokens = TokenTable.load(security.auth_tokens) if security.auth_tokens else None
        return cls(
            ca=_read(security.tls_ca, "tls_ca"),
            cert=_read(security.tls_cert, "tls_cert"),
            key=_read(security.tls_key, "tls_key"),
            tokens=tokens,
            client_certs=security.client_certs,
        )

    def guard(self, removed: Callable[[str], bool] | None = None) -> Guard:
        return Guard(self.ca, self.tokens, removed)

    def client_port(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca,
            require_client_auth=self.client_certs,
        )

    def cluster_port(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def to_peers(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc}") from None

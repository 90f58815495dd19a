"""What a client proves itself with: TLS to the node (the cluster CA), and a bearer token or
a client certificate for its role.

    Client("node1:8101", tls="ca.pem", token="...")                # TLS + token
    Client("node1:8101", tls=TLS("ca.pem", "me.pem", "me-key.pem"))  # TLS + certificate

Admin verbs (status, join, leave, remove, locate, local_get) go to a node's cluster port,
which takes certificates only: an operator's client certificate with the admin role.

Not given (None), `tls` and `token` come from the environment as the CLI reads them:
KVSTORE_TLS_CA (with KVSTORE_TLS_CERT and KVSTORE_TLS_KEY for a certificate) and
KVSTORE_TOKEN; `tls=False` means plaintext whatever the environment says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kvstore.errors import ConfigError


@dataclass(frozen=True)
class TLS:
    """PEM files: the cluster CA (to check the node), and optionally this client's
    certificate and key (to be known by them rather than by a token)."""

    ca: str
    cert: str = ""
    key: str = ""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None


def from_environment(
    tls: TLS | str | bool | None, token: str | None, env: Mapping[str, str] | None = None
) -> tuple[TLS | str | None, str | None]:
    """`tls` and `token` as given, or from KVSTORE_TLS_* / KVSTORE_TOKEN where None."""
    env = os.environ if env is None else env
    if tls is None and env.get("KVSTORE_TLS_CA"):
        tls = TLS(
            env["KVSTORE_TLS_CA"], env.get("KVSTORE_TLS_CERT", ""), env.get("KVSTORE_TLS_KEY", "")
        )
    if token is None and tls is not False:  # plaintext asked for: no credentials from env
        token = env.get("KVSTORE_TOKEN") or None
    return (None if isinstance(tls, bool) else tls), token


def channel_credentials(
    tls: TLS | str | bool | None, token: str | None
) -> grpc.ChannelCredentials | None:
    """The credentials of every channel a client opens (None: plaintext)."""
    if tls is True:
        raise ConfigError("tls=True names no CA: give the CA's PEM file, or a TLS(...)")
    tls, token = from_environment(tls, token)
    if tls is None:
        if token:
            raise ConfigError(
                "a token needs TLS (tls=the cluster CA): sent in clear it would authenticate"
                " whoever read it off the network"
            )
        return None
    if isinstance(tls, str):
        tls = TLS(tls)
    if bool(tls.cert) != bool(tls.key):
        raise ConfigError("a client certificate needs its key, and a key its certificate")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "CA certificate"),
        private_key=_read(tls.key, "client key") if tls.key else None,
        certificate_chain=_read(tls.cert, "client certificate") if tls.cert else None,
    )
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return credentials


def open_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
    aio: bool,
) -> Any:
    if aio:
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, credentials, options=options)
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)

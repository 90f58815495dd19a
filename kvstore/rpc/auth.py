"""Who may call what: every RPC names the role it needs, and each call's caller is known by
its TLS client certificate (issued by the cluster CA) or a bearer token.

* client port (KV): `read` for gets, `write` for puts (a write token reads too); a client
  proves who it is with a token (`authorization: Bearer ...`) or a client certificate;
* cluster port (Peer): `node`, a member's certificate only; the member it speaks for is the
  address its certificate names, so a member cannot speak for another;
* cluster port (Admin): `admin`, an operator's certificate.

The roles are checked in a wrapper around each servicer method, before the method runs, and
the caller is put in a context variable for the methods that bind a message to its sender
(gossip's `sender`, a forwarded put's). Health is not wrapped: probes need no credentials.

A node started without TLS (loopback only, or --insecure) checks nothing: its servicers are
wrapped by `open_access`, which makes every caller `OPEN` (every role). Outside any wrapped
call the caller is `NOBODY` (no role): a check reached some other way fails closed.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import KvError, PermissionDenied, Unauthenticated
from kvstore.rpc.status import abort
from kvstore.security import Identity, TokenTable, identity_from_cert, verify_issued_by

OPEN = Identity(name="(no TLS)", roles=frozenset({"read", "write", "admin", "node"}), node=None)

# The role each method needs, by service; a method not listed is refused (a new RPC must be
# given a role before anyone can call it).
_ROLES: dict[str, dict[str, str]] = {
    "KV": {
        "Get": "read",
        "GetMany": "read",
        "Put": "write",
        "PutMany": "write",
        "Stream": "read",
        "Topology": "read",
    },
    "Peer": {
        "NodeInfo": "node",
        "ReplicaMergeBatch": "node",
        "Gossip": "node",
        "TreeHashes": "node",
        "SegmentRecords": "node",
        "PartitionRecords": "node",
        "Purge": "node",
        "Stream": "node",
    },
    "Admin": {
        "LocalGet": "admin",
        "Status": "admin",
        "Join": "admin",
        "Leave": "admin",
        "Remove": "admin",
        "Locate": "admin",
        "Drain": "admin",
        "Repair": "admin",
    },
}

NOBODY = Identity(name="(no caller)", roles=frozenset(), node=None)

_caller: contextvars.ContextVar[Identity] = contextvars.ContextVar("kvstore_caller", default=NOBODY)

_BEARER = "bearer "
_VERIFIED_CACHE = 1024


def caller() -> Identity:
    """Who made the call being served (OPEN on a node without TLS, NOBODY outside a call)."""
    return _caller.get()


def require(role: str) -> Identity:
    """Raise PermissionDenied unless the current caller holds `role` (for checks inside a
    call: a put on a stream opened with `read`)."""
    identity = _caller.get()
    if not identity.allows(role):
        raise PermissionDenied(f"{identity.name} may not {_VERBS.get(role, role)}")
    return identity


def require_node(claimed: str) -> None:
    """A message that names its sender (`claimed`) must come from that member."""
    identity = _caller.get()
    if identity is OPEN:
        return
    if identity.node != claimed:
        raise PermissionDenied(
            f"a message from {identity.node or identity.name} names {claimed[:80]!r} as its"
            " sender: a member speaks only for itself"
        )


_VERBS = {"read": "read", "write": "write", "admin": "call admin verbs", "node": "call peers"}


class Guard:
    """Identifies each call's caller and checks its role. `ca_pem` verifies client
    certificates on a port where gRPC did not (the client port does not require them);
    `tokens`: the bearer tokens the client port takes (None: none)."""

    def __init__(
        self,
        ca_pem: bytes,
        tokens: TokenTable | None = None,
        removed: Callable[[str], bool] | None = None,
    ) -> None:
        """`removed(address)`: whether that member left or was removed: its certificate
        stays valid (no revocation list), but its calls are refused."""
        self._ca = ca_pem
        self._tokens = tokens
        self._removed = removed
        # Certificates already checked against the CA (one signature check each, not one
        # per call); bounded, as callers choose what they present.
        self._verified: dict[bytes, bool] = {}

    def identify(self, context: grpc.aio.ServicerContext) -> Identity:
        auth = context.auth_context() or {}
        certs = auth.get("x509_pem_cert") or []
        if certs:
            pem = certs[0]
            if isinstance(pem, str):
                pem = pem.encode()
            # gRPC checked the chain where the port requires certificates; checked again
            # here (cached per certificate) so no port ever trusts one it did not verify.
            verified = self._verified.get(pem)
            if verified is None:
                if len(self._verified) >= _VERIFIED_CACHE:
                    self._verified.clear()
                verified = self._verified[pem] = verify_issued_by(pem, self._ca)
            if not verified:
                raise Unauthenticated("the client certificate is not from the cluster's CA")
            identity = identity_from_cert(pem)
            if identity.node is not None and self._removed and self._removed(identity.node):
                raise PermissionDenied(f"{identity.node} left the cluster or was removed")
            return identity
        token = _bearer(context.invocation_metadata() or ())
        if token is not None and self._tokens is not None:
            known = self._tokens.identify(token)
            if known is not None:
                return known
            raise Unauthenticated("unknown token")
        raise Unauthenticated(
            "no credentials: give a token (authorization: Bearer ...) or a client certificate"
            " from the cluster's CA"
        )

    def wrap(self, service: str, servicer: Any) -> Any:
        """An object with the servicer's methods of `service`, each checking its role
        first (for `add_<Service>Servicer_to_server`)."""
        roles = _ROLES[service]
        methods: dict[str, Callable[..., Any]] = {}
        for method in pb.DESCRIPTOR.services_by_name[service].methods:
            role = roles.get(method.name)
            handler = getattr(servicer, method.name)
            methods[method.name] = (
                self._guarded(handler, role) if role else _refused(method.full_name)
            )
        return _Wrapped(methods)

    def _guarded(self, handler: Callable[..., Any], role: str) -> Callable[..., Any]:
        @functools.wraps(handler)
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                identity = self.identify(context)
                if not identity.allows(role):
                    raise PermissionDenied(f"{identity.name} may not {_VERBS.get(role, role)}")
            except KvError as exc:
                await abort(context, exc)
            _caller.set(identity)
            return await handler(request, context)

        return guarded


def open_access(service: str, servicer: Any) -> Any:
    """The servicer's methods of `service`, each serving its caller as OPEN: a node without
    TLS (loopback only, or --insecure) checks no credentials."""
    methods: dict[str, Callable[..., Any]] = {}
    for method in pb.DESCRIPTOR.services_by_name[service].methods:
        methods[method.name] = _opened(getattr(servicer, method.name))
    return _Wrapped(methods)


def _opened(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    async def opened(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _caller.set(OPEN)
        return await handler(request, context)

    return opened


class _Wrapped:
    def __init__(self, methods: Mapping[str, Callable[..., Any]]) -> None:
        for name, method in methods.items():
            setattr(self, name, method)


def _refused(name: str) -> Callable[..., Any]:
    async def refused(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, PermissionDenied(f"{name} has no role: nobody may call it"))

    return refused


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata:
        is_bearer = isinstance(value, str) and value[: len(_BEARER)].lower() == _BEARER
        if key == "authorization" and is_bearer:
            return str(value[len(_BEARER) :]).strip()
    return None

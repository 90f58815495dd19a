"""Who a peer is: the roles a certificate or a token grants, and the error for bad material."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvstore.errors import ConfigError

ROLES: tuple[str, ...] = ("read", "write", "admin", "node")

# Each role with what it implies, so a check is one set lookup per RPC. A node is a cluster
# member, not a more powerful client: what peers may ask of each other is the RPC layer's call.
_IMPLIED: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
    "node": frozenset({"node"}),
}

CLIENT_ROLES: tuple[str, ...] = ("read", "write", "admin")

# Names end up in file names (clients/<name>.pem), in certificate subjects and as the first
# field of a token line: no separators, no whitespace, no leading dot.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


class SecurityError(ConfigError):
    """TLS material or a token table that cannot be read or used; the message says which and why."""


@dataclass(frozen=True)
class Identity:
    """An authenticated peer: a certificate's subject CN or a token's name, with its roles."""

    name: str
    roles: frozenset[str]  # expanded: {"write"} is stored as {"read", "write"}
    node: str | None = None  # for node certificates: the member address ("HOST:PORT")

    def allows(self, role: str) -> bool:
        return role in self.roles


def expand_roles(roles: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """The roles with every role they imply; SecurityError on an unknown one."""
    expanded: set[str] = set()
    for role in roles:
        implied = _IMPLIED.get(role)
        if implied is None:
            raise SecurityError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
        expanded |= implied
    return frozenset(expanded)


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise SecurityError(
            f"bad {what} name {name!r}: 1-128 of letters, digits, '.', '_', '-', "
            "not starting with '.'"
        )
    return name


def check_client_role(role: str) -> str:
    if role not in CLIENT_ROLES:
        raise SecurityError(
            f"bad client role {role!r}: one of {', '.join(CLIENT_ROLES)} "
            "(node is for cluster members' certificates only)"
        )
    return role

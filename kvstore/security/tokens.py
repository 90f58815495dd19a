"""Bearer tokens: random strings handed to clients; the node keeps only their SHA-256 digests."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable

from kvstore.security.identity import (
    Identity,
    SecurityError,
    check_client_role,
    check_name,
    expand_roles,
)

_DIGEST = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe so it fits a header and a shell argument."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest stored in place of the token.

    A plain hash suffices (no salt, no slow KDF) because tokens are 256 random bits, not
    passwords a dictionary could guess.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenTable:
    """Token digests with the identities they grant; read from a file of NAME ROLE SHA256HEX."""

    def __init__(self, entries: Iterable[tuple[str, str, str]] = ()) -> None:
        self._entries: list[tuple[bytes, Identity]] = []
        for name, role, digest in entries:
            self._add(name, role, digest, "")

    def _add(self, name: str, role: str, digest: str, where: str) -> None:
        try:
            check_name(name, "token")
            check_client_role(role)
        except SecurityError as exc:
            raise SecurityError(f"{where}{exc}") from None
        digest = digest.lower()
        if _DIGEST.fullmatch(digest) is None:
            raise SecurityError(f"{where}bad digest for {name!r}: 64 hex digits of SHA-256")
        for _, known in self._entries:
            if known.name == name:
                raise SecurityError(f"{where}duplicate token name {name!r}")
        # Two names sharing one token would make identify() pick one arbitrarily.
        if any(hmac.compare_digest(stored, digest.encode()) for stored, _ in self._entries):
            raise SecurityError(f"{where}token {name!r} has the same digest as another")
        identity = Identity(name, expand_roles(frozenset({role})), None)
        self._entries.append((digest.encode("ascii"), identity))

    @classmethod
    def parse(cls, text: str, source: str = "<tokens>") -> TokenTable:
        table = cls()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            where = f"{source}:{number}: "
            if len(fields) != 3:
                raise SecurityError(
                    f"{where}expected 'NAME ROLE SHA256HEX', got {len(fields)} field(s)"
                )
            table._add(fields[0], fields[1], fields[2], where)
        return table

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TokenTable:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityError(f"cannot read token file {os.fspath(path)}: {exc}") from exc
        return cls.parse(text, os.fspath(path))

    def identify(self, token: str) -> Identity | None:
        """The identity `token` grants, or None.

        Compares against every entry without stopping at a match, so the time taken says
        nothing about which entry (if any) matched.
        """
        digest = token_digest(token).encode("ascii")
        found: Identity | None = None
        for stored, identity in self._entries:
            if hmac.compare_digest(stored, digest):
                found = identity
        return found

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(identity.name for _, identity in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def line(name: str, role: str, token: str) -> str:
        """The line (no trailing newline) that grants `token` to `name` with `role`."""
        check_name(name, "token")
        check_client_role(role)
        return f"{name} {role} {token_digest(token)}"

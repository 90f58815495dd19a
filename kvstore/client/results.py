"""What the client returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvstore.errors import KvError


@dataclass(frozen=True, slots=True)
class GetResult:
    """The live values of a key (one per concurrent version; tombstones left out), and the
    causal context to pass to the next put or delete of the key. `found` is False when no
    live value exists; the context still matters then (it covers any tombstones)."""

    values: list[bytes] = field(default_factory=list)
    context: bytes = b""
    found: bool = False

    @property
    def value(self) -> bytes | None:
        """The single value, or None when not found. Raises when there are siblings."""
        if not self.values:
            return None
        if len(self.values) > 1:
            raise ValueError(f"{len(self.values)} concurrent values: resolve them (see .values)")
        return self.values[0]


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a put or delete returns.

    Without return_body: `context` covers exactly what the writer was shown (the context it
    sent) plus its own write. A concurrent sibling the writer never saw stays outside it,
    so a later put with it replaces the writer's own write and never that sibling.

    With return_body: `values` are the live siblings after the write (the writer's own
    among them; one value when a resolver merged them), and `context` covers exactly them,
    so a put with it replaces them all: resolve concurrent versions in one round trip.
    """

    context: bytes
    values: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PutItem:
    """One write of a put_many: `value` None writes a tombstone (a delete). `context` and
    `return_body` mean what they mean for `put`."""

    key: bytes | str
    value: bytes | None
    context: bytes | None = None
    return_body: bool = False


# A batch's answer: one item per key, in order; a key that failed holds its error (the same
# typed errors a single call raises), the others their results.
GetItem = GetResult | KvError
PutResultItem = PutResult | KvError

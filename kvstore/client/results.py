"""What the client returns."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """The causal context after the write. It covers every version the coordinating replica
    held after the write (as a read of it would), so a later put with it replaces them."""

    context: bytes

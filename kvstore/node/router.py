"""The Router: the rings this node routes by (the current one and, while partitions move,
the pending one) and, for a key, where a request goes: its primaries, the fallbacks that
may stand in for them, and which of those the failure detector holds down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvstore.core.membership import Membership
from kvstore.core.requests import Location
from kvstore.core.ring import Ring, RoutedKey
from kvstore.errors import Unavailable
from kvstore.node.clock import Clock


@dataclass(frozen=True, slots=True)
class Route:
    key: RoutedKey
    primaries: list[str]
    # Those that may stand in for a primary, in preference order (none for a strict request).
    fallbacks: list[str]
    down: set[str]


class Router:
    def __init__(
        self, address: str, membership: Membership, n: int, clock: Clock, seeds: Sequence[str]
    ) -> None:
        self.address = address
        self._membership = membership
        self._n = n
        self._clock = clock
        self._seeds = tuple(seeds)
        self.ring: Ring | None = None
        self.pending_ring: Ring | None = None
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the rings from the membership's ring state (after gossip changed it)."""
        state = self._membership.ring
        self.ring = None if state is None else Ring.from_layout(state.current, self._n)
        pending = None if state is None else state.pending
        self.pending_ring = None if pending is None else Ring.from_layout(pending, self._n)

    def require_ring(self) -> Ring:
        if self.ring is None:
            raise Unavailable(
                f"node {self.address} has no ring yet: it is waiting to hear from its seeds"
                f" ({', '.join(self._seeds) or 'none given'})"
            )
        return self.ring

    @property
    def ring_epoch(self) -> int:
        state = self._membership.ring
        return 0 if state is None else state.epoch

    def is_ring_member(self, address: str) -> bool:
        """Whether the address owns (or is about to own) partitions: the only peers a
        request may make this node dial."""
        return any(
            ring is not None and address in ring.members for ring in (self.ring, self.pending_ring)
        )

    def is_up(self, address: str) -> bool:
        return self._membership.is_up(address, self._clock.monotonic())

    def route(self, key: RoutedKey, strict: bool = False) -> Route:
        primaries, others = self.require_ring().split(key)
        fallbacks = [] if strict else list(others)
        up = self._membership.up_checker(self._clock.monotonic())
        down = {m for m in primaries if not up(m)}
        down.update(m for m in fallbacks if not up(m))
        return Route(key, list(primaries), fallbacks, down)

    def incoming(self, key: RoutedKey, primaries: Sequence[str]) -> list[str]:
        """The key's primaries in the pending ring that are not primaries now: while
        partitions move they get every write too (not counted in w)."""
        pending = self.pending_ring
        if pending is None:
            return []
        return [t for t in pending.primaries(key) if t not in primaries]

    def locate(self, key: RoutedKey) -> Location:
        ring = self.require_ring()
        pending = self.pending_ring
        return Location(
            ring_epoch=self.ring_epoch,
            primaries=tuple(ring.primaries(key)),
            pending_primaries=tuple(pending.primaries(key)) if pending else (),
        )

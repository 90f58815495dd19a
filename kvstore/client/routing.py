"""Where a client sends each call: the ring it learned from a node (KV.Topology), so a key's
call goes to one of its primaries (no forwarding hop), and the circuit breakers, so a node
that failed or stalled lately is skipped while it stays bad."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client.breaker import BreakerState, CircuitBreaker
from kvstore.client.policy import BreakerPolicy
from kvstore.core.cluster import InvalidView, RingLayout, check_address
from kvstore.core.ring import Ring, RingError, routed
from kvstore.errors import InvalidArgument

# A topology answer is a node's word, checked like any input: at most this many members.
MAX_TOPOLOGY_MEMBERS = 1024
_ROUTABLE = frozenset({"joining", "active", "leaving"})
PROBE_CHECK_S = 0.05


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """One topology answer, ready to route by: each key's primaries as client addresses."""

    epoch: int
    ring: Ring | None
    # cluster address -> client address, of members that may be sent calls
    client_of: dict[str, str]
    addresses: tuple[str, ...]  # the client addresses, sorted
    # Client addresses of members the answering node's failure detector held down: tried
    # after the others, like a node whose breaker is open.
    down: frozenset[str] = frozenset()

    @property
    def complete(self) -> bool:
        """Whether every ring member's client address is known (right after a start, a
        node may not have heard every member's record yet)."""
        return self.ring is not None and all(m in self.client_of for m in self.ring.members)

    def preference(self, key: bytes) -> tuple[list[str], int]:
        """The key's members in the ring's preference order (client addresses), and how
        many of the first are its primaries."""
        if self.ring is None:
            return [], 0
        return self.partition_preference(self.ring.partition_of_position(routed(key).position))

    def partition_preference(self, partition: int) -> tuple[list[str], int]:
        """`preference` of every key of the ring's `partition`."""
        assert self.ring is not None
        primaries, fallbacks = self.ring.split_partition(partition)
        first = [self.client_of[m] for m in primaries if m in self.client_of]
        rest = [self.client_of[m] for m in fallbacks if m in self.client_of]
        return first + rest, len(first)


def table_from(answer: pb.TopologyResponse, check: Iterable[str] = ()) -> RoutingTable:
    """Raises InvalidArgument for an answer no healthy node gives (it is then not used)."""
    if len(answer.members) > MAX_TOPOLOGY_MEMBERS:
        raise InvalidArgument(f"a topology of {len(answer.members)} members")
    client_of: dict[str, str] = {}
    down: set[str] = set()
    for member in answer.members:
        if member.status in _ROUTABLE and member.client_address:
            try:
                check_address(member.address)
                check_address(member.client_address)
            except InvalidView as exc:
                raise InvalidArgument(f"the topology names a bad address: {exc}") from None
            client_of[member.address] = member.client_address
            if not member.up:
                down.add(member.client_address)
    ring = None
    if answer.has_ring:
        try:
            layout = RingLayout(tuple(answer.ring.members), tuple(answer.ring.owners))
            ring = Ring.from_layout(layout, answer.n)
        except (RingError, ValueError, IndexError) as exc:
            raise InvalidArgument(f"the node's ring cannot be routed by: {exc}") from None
    if not client_of:
        raise InvalidArgument("the topology names no member clients can reach")
    addresses = tuple(sorted(set(client_of.values())))
    return RoutingTable(answer.ring_epoch, ring, client_of, addresses, frozenset(down))


class NodeSelector:
    """The order in which one call tries nodes: the key's primaries first (those whose
    breaker is closed, in preference order), then the other members, then the nodes held
    suspect (a call is never refused for want of a trusted node: it tries them last)."""

    def __init__(self, seeds: Sequence[str], policy: BreakerPolicy, rng: random.Random):
        self.seeds = list(seeds)
        self._table: RoutingTable | None = None
        self._addresses = list(self.seeds)
        self._policy = policy
        self._rng = rng
        self._breakers: dict[str, CircuitBreaker] = {}
        self._next = itertools.count(rng.randrange(1 << 16))
        self._next_probe_check = 0.0
        # partition -> (the order of its keys' calls, how many are primaries), for _table
        self._orders: dict[int, tuple[list[str], int]] = {}

    @property
    def table(self) -> RoutingTable | None:
        return self._table

    @table.setter
    def table(self, table: RoutingTable | None) -> None:
        self._table = table
        self._orders = {}
        if table is None:
            self._addresses = list(self.seeds)
        else:
            known = set(table.addresses)
            self._addresses = list(table.addresses) + [s for s in self.seeds if s not in known]

    @property
    def addresses(self) -> list[str]:
        """Every node calls may go to: the members the topology names, and the seeds (a
        topology may not name every member yet; a seed that left is skipped by its
        breaker once it fails)."""
        return self._addresses

    def breaker(self, address: str) -> CircuitBreaker:
        breaker = self._breakers.get(address)
        if breaker is None:
            breaker = self._breakers[address] = CircuitBreaker(self._policy, self._rng)
        return breaker

    def state(self, address: str, now: float) -> BreakerState:
        breaker = self._breakers.get(address)
        return BreakerState.CLOSED if breaker is None else breaker.state(now)

    def order(self, key: bytes | None, now: float) -> tuple[list[str], int]:
        """The nodes for one call, and how many of the first are primaries of its key (0
        without a key or a ring). Calls without a key start at a different node each time.
        The caller must not change the list (a key's is kept for its partition)."""
        table = self._table
        cached = None
        if key is not None and table is not None and table.ring is not None:
            # Worked out once per partition: this runs for every call.
            partition = table.ring.partition_of_position(routed(key).position)
            cached = self._orders.get(partition)
            if cached is None:
                nodes, primaries = table.partition_preference(partition)
                if nodes:  # else no member of it has a known client address yet
                    listed = set(nodes)
                    nodes += [a for a in self._addresses if a not in listed]
                    cached = self._orders[partition] = (nodes, primaries)
        if cached is not None:
            nodes, primaries = cached
        else:
            everyone = self._addresses
            start = next(self._next) % len(everyone)
            nodes, primaries = everyone[start:] + everyone[:start], 0
        down = table.down if table is not None else frozenset()
        if not down and not any(b.failures for b in self._breakers.values()):
            return nodes, primaries  # every node trusted: the usual case, kept cheap
        trusted = [a for a in nodes if a not in down and self._available(a, now)]
        if len(trusted) == len(nodes):
            return nodes, primaries
        kept = set(trusted)
        suspect = [a for a in nodes if a not in kept]
        first = set(nodes[:primaries])
        primaries = sum(1 for a in trusted[:primaries] if a in first)
        return trusted + suspect, primaries

    def _available(self, address: str, now: float) -> bool:
        # Calls go to closed breakers only: a half-open node is probed by the client itself
        # (`probes_due`), not with a call of the application, which would wait out its
        # deadline on a node still stalled.
        breaker = self._breakers.get(address)
        return breaker is None or breaker.state(now) is BreakerState.CLOSED

    def probes_due(self, now: float) -> list[str]:
        """Nodes whose breaker has half-opened with no probe out: each is to be probed
        now (`take` it, then `success` or `failure`). Looked for at most every
        PROBE_CHECK_S, so a call does not walk every breaker."""
        if now < self._next_probe_check:
            return []
        self._next_probe_check = now + PROBE_CHECK_S
        return [a for a, b in self._breakers.items() if b.failures and b.available(now)]

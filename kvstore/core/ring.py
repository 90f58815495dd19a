"""The consistent-hash ring: Q fixed partitions, who owns each, and preference lists.

Keys hash (murmur3, 64 bits) onto a ring cut into Q equal partitions, Q a power of two
(Dynamo's strategy 3, as Riak). A key's preference list walks the ring from its partition:
the first N distinct owners are its primaries, the others its fallbacks, in order.

The claim is a pure function of the sorted member list, so every node given the same members
computes the same ring with no coordination.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from kvstore import _native

DEFAULT_PARTITIONS = 256
MAX_PARTITIONS = 1 << 16
MAX_MEMBERS = 1024
# Steps per tail the search may take before the construction (`_spread_tail`) takes over:
# a search that finds a filling at all almost always does so in far fewer, and a few thousand
# keep a claim of 256 partitions within milliseconds.
_SEARCH_BUDGET = 2_000


class RingError(ValueError):
    """A ring that cannot be built from the given members and sizes."""


@dataclass(frozen=True, slots=True)
class PreferenceEntry:
    member: str
    primary: bool


def _check_sizes(members: Sequence[str], partitions: int, n: int) -> None:
    if not members:
        raise RingError("a ring needs at least one member")
    if len(set(members)) != len(members):
        raise RingError("ring members must be distinct")
    if len(members) > MAX_MEMBERS:
        raise RingError(f"at most {MAX_MEMBERS} members")
    if partitions < 1 or partitions > MAX_PARTITIONS or partitions & (partitions - 1):
        raise RingError(f"partitions must be a power of two in 1..{MAX_PARTITIONS}")
    if partitions < len(members):
        raise RingError("partitions must be at least the number of members")
    if n < 1:
        raise RingError("n must be at least 1")


def claim(member_count: int, partitions: int, n: int) -> list[int]:
    """Owner index of every partition, such that any min(n, members) consecutive partitions
    (wrapping around) have distinct owners wherever that is possible, with counts balanced
    to within one.

    Round robin satisfies both except where Q is not a multiple of the member count: there
    the last cycle meets the first one at the wrap. The tail is then re-filled by a bounded
    search that respects the windows on both sides; should the search not find a filling
    within its budget, the tail is re-filled by construction instead (`_spread_tail`), which
    always succeeds. An arrangement exists exactly when the members owning the most
    partitions, ceil(Q / members) each, can keep a window apart: ceil(Q / members) * window
    <= Q. When none exists (as with exactly n members and Q not a multiple of n), round robin
    stays and the preference-list walk, which skips repeated owners, still yields n distinct
    primaries.
    """
    m = member_count
    owners = [p % m for p in range(partitions)]
    window = min(n, m)
    if window <= 1 or partitions % m == 0:
        return owners
    cap = -(-partitions // m)  # ceil: the most partitions one member may own
    if cap * window > partitions:
        return owners  # no arrangement exists
    tail = partitions % m + m
    while tail <= min(partitions, 3 * m):
        filled = _fill_tail(owners, tail, m, window, cap)
        if filled is not None:
            return filled
        tail += m
    return _spread_tail(m, partitions, window)


def _spread_tail(m: int, partitions: int, window: int) -> list[int]:
    """Round robin for as many full rounds as can be kept, then a tail of rounds in which
    every member skips at most one round, the skips spread evenly over the tail's rounds.

    Needs ceil(Q / m) * window <= Q and m > window. The tail holds `rounds` rounds; member x
    owns `rounds` partitions in it if x < Q % m, else one fewer. Writing the tail's owners
    as a sequence sorted by member (x repeated as often as it owns) and dealing it out like
    cards to the rounds (element e to round e % rounds), each round lists members in
    increasing order, and a member's partitions land in consecutive rounds at the same
    place or, where they wrap from the last round to the first, one place later. Every
    round holds at least `window` members (the number of full rounds kept ensures it), so
    consecutive partitions of one member, in consecutive rounds or across a full round,
    lie at least `window` apart.
    """
    cap = -(-partitions // m)
    keep = min(cap - 1, (partitions - window * cap) // (m - window))  # full rounds kept
    rounds = cap - keep
    more = partitions % m  # members owning `cap` partitions (Q % m != 0 here)
    dealt: list[list[int]] = [[] for _ in range(rounds)]
    e = 0
    for member in range(m):
        for _ in range(rounds if member < more else rounds - 1):
            dealt[e % rounds].append(member)
            e += 1
    owners = [p % m for p in range(keep * m)]
    for round_ in dealt:
        owners.extend(round_)
    return owners


def _fill_tail(owners: list[int], tail: int, m: int, window: int, cap: int) -> list[int] | None:
    """Depth-first search (iterative, bounded) for owners of the last `tail` partitions."""
    q = len(owners)
    start = q - tail
    slots = owners[:start] + [-1] * tail
    counts = [0] * m
    for owner in owners[:start]:
        counts[owner] += 1

    def candidates(pos: int) -> list[int]:
        banned = {slots[pos - k] for k in range(1, window)}  # earlier neighbours
        banned.update(slots[pos + k - q] for k in range(1, window) if pos + k >= q)  # the wrap
        previous = slots[pos - 1]
        # Least-owned first, then the member right after the previous owner (round robin).
        ordered = sorted(
            (c for c in range(m) if counts[c] < cap and c not in banned),
            key=lambda c: (counts[c], (c - previous - 1) % m),
        )
        ordered.reverse()  # popped from the end
        return ordered

    stack = [candidates(start)]
    pos = start
    for _ in range(_SEARCH_BUDGET):
        options = stack[-1]
        if not options:
            stack.pop()
            pos -= 1
            if pos < start:
                return None
            counts[slots[pos]] -= 1
            slots[pos] = -1
            continue
        choice = options.pop()
        slots[pos] = choice
        counts[choice] += 1
        pos += 1
        if pos == q:
            return slots
        stack.append(candidates(pos))
    return None


class Ring:
    """Partition ownership for a set of members, and preference lists for keys."""

    __slots__ = ("_bits", "_index", "_owners", "members", "n", "partitions")

    def __init__(self, members: Sequence[str], partitions: int = DEFAULT_PARTITIONS, n: int = 3):
        _check_sizes(members, partitions, n)
        self.members: tuple[str, ...] = tuple(sorted(members))
        self.partitions = partitions
        self.n = n
        self._bits = max(partitions.bit_length() - 1, 0)
        self._owners = array("H", claim(len(self.members), partitions, n))
        self._index = {member: i for i, member in enumerate(self.members)}

    def owner(self, partition: int) -> str:
        return self.members[self._owners[partition]]

    def owned_by(self, member: str) -> list[int]:
        index = self._index[member]
        return [p for p, owner in enumerate(self._owners) if owner == index]

    def partition_of_position(self, position: int) -> int:
        if self._bits == 0:
            return 0
        return _native.partition_of(position, self._bits)

    def partition_for_key(self, key: bytes) -> int:
        return self.partition_of_position(_native.hash_key(key))

    def preference_list(self, key: bytes) -> list[PreferenceEntry]:
        """Every member, in the order a request for `key` tries them: primaries first."""
        walk = _native.preference_walk(self._owners, self.partition_for_key(key), len(self.members))
        return [
            PreferenceEntry(self.members[index], primary=i < self.n) for i, index in enumerate(walk)
        ]

    def primaries(self, key: bytes) -> list[str]:
        return [e.member for e in self.preference_list(key) if e.primary]

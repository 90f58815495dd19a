"""The consistent-hash ring: Q fixed partitions, who owns each, and preference lists.

Keys hash (murmur3, 64 bits) onto a ring cut into Q equal partitions, Q a power of two
(Dynamo's strategy 3, as Riak). A key's preference list walks the ring from its partition:
the first N distinct owners are its primaries, the others its fallbacks, in order.

The initial claim is a pure function of the sorted member list, so every node given the same
members computes the same ring with no coordination. Later rings are derived from the one before
(`reclaim`) so that a join or leave moves few partitions; the claimant (`kvstore.core.ringplan`)
computes them and gossip carries the resulting `RingLayout` to everyone.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass

from kvstore import _native
from kvstore.core.cluster import RingLayout

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


@dataclass(frozen=True, slots=True)
class RoutedKey:
    """A key with its ring position: hashed once when a request arrives, then carried to
    routing, storage and the context codec, none of which hashes it again."""

    key: bytes
    position: int


def routed(key: bytes) -> RoutedKey:
    return RoutedKey(key, _native.hash_key(key))


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


def initial_layout(members: Sequence[str], partitions: int, n: int) -> RingLayout:
    """The layout of a cluster's first ring: `claim` over the sorted members.

    Sorting makes it independent of the order members were listed in, so every node computes
    the same one."""
    _check_sizes(members, partitions, n)
    ordered = tuple(sorted(members))
    return RingLayout(ordered, tuple(claim(len(ordered), partitions, n)))


def _check_layout(layout: RingLayout, n: int) -> None:
    """Reject a layout no node could route by; it may come from gossip, so check everything."""
    _check_sizes(layout.members, layout.partitions, n)
    if list(layout.members) != sorted(layout.members):
        raise RingError("layout members must be sorted")
    m = len(layout.members)
    if any(not 0 <= owner < m for owner in layout.owners):
        raise RingError("layout owner index out of range")


def reclaim(layout: RingLayout, members: Sequence[str], n: int) -> RingLayout:
    """The next layout when the member set changes from `layout.members` to `members`.

    A join or leave should move about 1/m of the partitions, not reshuffle the ring as
    `claim` over the new member count would; every moved partition must be handed off
    before the new layout is committed, so each move costs a data transfer. As Riak's
    claim_v2, then:

    * a member that stays keeps its partitions unless it has more than its share;
    * each member's share is floor(Q/m) or ceil(Q/m), the larger shares going to the members
      owning most already (fewest moves);
    * partitions of removed members go to members below their share, the most constrained
      partitions first; then members below their share take partitions from the members
      above it, the one with most to spare first, spreading the taker's partitions around
      the ring;
    * each time the taker is chosen so that no min(n, m) consecutive partitions get a
      repeated owner (a key's primaries are then distinct even without the walk skipping).

    One join therefore moves exactly floor(Q/(m+1)) partitions and one leave exactly the
    leaver's. Where that incremental step cannot keep every window distinct but `claim`
    can (small clusters, e.g. 5 -> 4 members with n = 3, and rings that were already
    violating, e.g. after growing while m <= n), the result falls back to the `claim` layout
    with its member labels matched to the current owners: correct, but it moves many
    partitions. Where no arrangement exists at all (see `claim`), the incremental result is
    kept: the preference walk skips repeated owners, so keys still get n distinct primaries.

    Deterministic: depends only on the layout and the set of `members` (sorted here).
    """
    _check_layout(layout, n)
    ordered = tuple(sorted(members))
    _check_sizes(ordered, layout.partitions, n)
    if ordered == layout.members:
        return layout
    index = {member: i for i, member in enumerate(ordered)}
    old = [index.get(layout.members[owner], -1) for owner in layout.owners]  # -1: free
    m, window = len(ordered), min(n, len(ordered))
    owners = _rebalance(old, m, window)
    if _window_violations(owners, window):
        fallback = claim(m, layout.partitions, n)
        if not _window_violations(fallback, window):
            owners = _repair(owners, old, window)
            if _window_violations(owners, window):
                owners = _relabel(fallback, old, m)
    return RingLayout(ordered, tuple(owners))


def _window_violations(owners: Sequence[int], window: int) -> int:
    """How many cyclic windows of `window` partitions hold a repeated owner."""
    q = len(owners)
    if window <= 1:
        return 0
    return sum(len({owners[(p + k) % q] for k in range(window)}) != window for p in range(q))


def _shares(counts: Sequence[int], partitions: int) -> list[int]:
    """Each member's target count: floor(Q/m), plus one for the Q % m members owning most
    (ties by index), so members that must lose partitions lose as few as possible."""
    m = len(counts)
    base, extra = divmod(partitions, m)
    shares = [base] * m
    for member in sorted(range(m), key=lambda i: (-counts[i], i))[:extra]:
        shares[member] += 1
    return shares


def _gap(mine: Sequence[int], partition: int, q: int) -> int:
    """Cyclic distance from `partition` to the nearest of the sorted partitions `mine`;
    q when there are none."""
    if not mine:
        return q
    i = bisect_left(mine, partition)
    after = mine[i % len(mine)]
    before = mine[i - 1]
    return min((after - partition) % q, (partition - before) % q)


def _gaps(owners: Sequence[int], member: int) -> list[int]:
    """`_gap` for every partition at once: two sweeps around the ring, each wrapping once."""
    q = len(owners)
    dist = [q] * q
    last = -1
    for p in range(2 * q):
        if owners[p % q] == member:
            last = p
        if last >= 0:
            dist[p % q] = min(dist[p % q], p - last)
    last = -1
    for p in range(2 * q - 1, -1, -1):
        if owners[p % q] == member:
            last = p
        if last >= 0:
            dist[p % q] = min(dist[p % q], last - p)
    return dist


def _rebalance(owners: list[int], m: int, window: int) -> list[int]:
    """Owners (-1 for a removed member's partition) rebalanced to shares with few moves.

    Windows are kept where the greedy choices allow and otherwise left repeated (the caller
    checks)."""
    q = len(owners)
    original = owners
    owners = owners[:]
    counts = [0] * m
    mine: list[list[int]] = [[] for _ in range(m)]
    for p, owner in enumerate(owners):
        if owner >= 0:
            counts[owner] += 1
            mine[owner].append(p)
    shares = _shares(counts, q)

    def fits(member: int, partition: int) -> bool:
        return _gap(mine[member], partition, q) >= window

    def repeated(partition: int) -> bool:
        """Whether the partition's owner owns another one in a window with it: taking it
        repairs a window the layout breaks already (from an earlier ring)."""
        owner = owners[partition]
        return any(owners[(partition + k) % q] == owner for k in range(1 - window, window) if k)

    def give(partition: int, member: int) -> None:
        previous = owners[partition]
        if previous >= 0:
            counts[previous] -= 1
            mine[previous].remove(partition)
        owners[partition] = member
        counts[member] += 1
        insort(mine[member], partition)

    # Removed members' partitions first, most constrained (fewest fitting takers) first. When
    # no member below its share fits, a member at or above it that fits takes the partition
    # (to give one back below: a partition moved twice in one reclaim still moves once).
    free = [p for p in range(q) if owners[p] < 0]
    below = [t for t in range(m) if counts[t] < shares[t]]
    free.sort(key=lambda p: (sum(fits(t, p) for t in below), p))
    for p in free:
        give(
            p,
            min(
                range(m),
                key=lambda t: (not fits(t, p), counts[t] >= shares[t], counts[t] - shares[t], t),
            ),
        )

    # Then members below their share take from those above it, the most constrained taker
    # (fewest partitions it could take without a repeat) first. A taker that fits none
    # takes one that fits from a member at its share, which then takes in turn (a chain,
    # bounded; past the bound, repeats are accepted and the caller falls back to `claim`).
    chained: set[int] = set()
    for step in range(2 * q + 4 * m):
        takers = [t for t in range(m) if counts[t] < shares[t]]
        if not takers:
            break
        spare = [p for p in range(q) if counts[owners[p]] > shares[owners[p]]]
        gaps = {t: _gaps(owners, t) for t in takers}
        fitting = {t: sum(gaps[t][p] >= window for p in spare) for t in takers}
        taker = min(takers, key=lambda t: (fitting[t], counts[t] - shares[t], t))
        dist = gaps[taker]
        choices = spare
        if not fitting[taker] and step < q:
            links = [
                p
                for p in range(q)
                if dist[p] >= window
                and p not in chained
                and owners[p] != taker
                and counts[owners[p]] == shares[owners[p]]
            ]
            choices = links or spare
        taken = min(
            choices,
            key=lambda p: (
                dist[p] < window,
                original[p] == owners[p],  # moving it again costs no transfer
                not repeated(p),
                shares[owners[p]] - counts[owners[p]],
                -dist[p],
                p,
            ),
        )
        if counts[owners[taken]] == shares[owners[taken]]:
            chained.add(taken)
        give(taken, taker)
    return owners


def _clear(owners: Sequence[int], member: int, partition: int, window: int, skip: int) -> bool:
    """Whether `member` owns nothing within `window - 1` of `partition`, not counting the
    partition `skip` (which is about to change hands)."""
    q = len(owners)
    for k in range(1 - window, window):
        other = (partition + k) % q
        if k and other != skip and owners[other] == member:
            return False
    return True


def _repair(owners: list[int], original: Sequence[int], window: int) -> list[int]:
    """Swap owners of partition pairs (which keeps every count) to clear repeated windows,
    cheapest swap first: a partition already moved in this reclaim moves again for free.

    The greedy choices of `_rebalance` occasionally leave a few repeats; a swap each clears
    them with at most two extra moves, where falling back to `claim` would move most of the
    ring."""
    q = len(owners)
    owners = owners[:]

    def cost(p: int, member: int) -> int:
        return int(member != original[p]) - int(owners[p] != original[p])

    for _ in range(q):
        bad = [p for p in range(q) if not _clear(owners, owners[p], p, window, p)]
        if not bad:
            break
        swaps = [
            (cost(p, owners[r]) + cost(r, owners[p]), p, r)
            for p in bad
            for r in range(q)
            if owners[r] != owners[p]
            and _clear(owners, owners[p], r, window, p)
            and _clear(owners, owners[r], p, window, r)
        ]
        if not swaps:
            break
        _, p, r = min(swaps)
        owners[p], owners[r] = owners[r], owners[p]
    return owners


def _relabel(owners: Sequence[int], old: Sequence[int], m: int) -> list[int]:
    """`owners` (a fresh claim) with its member indices permuted to keep as many partitions
    with their `old` owner as a greedy matching finds: same balance and windows, fewer moves."""
    overlap: dict[tuple[int, int], int] = {}
    for label, before in zip(owners, old, strict=True):
        if before >= 0:
            overlap[label, before] = overlap.get((label, before), 0) + 1
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for (label, before), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if label not in mapping and before not in used:
            mapping[label] = before
            used.add(before)
    rest = iter(sorted(set(range(m)) - used))
    for label in range(m):
        if label not in mapping:
            mapping[label] = next(rest)
    return [mapping[label] for label in owners]


class Ring:
    """Partition ownership for a set of members, and preference lists for keys."""

    __slots__ = ("_bits", "_index", "_layout", "_owners", "_splits", "members", "n", "partitions")

    def __init__(self, members: Sequence[str], partitions: int = DEFAULT_PARTITIONS, n: int = 3):
        """The initial ring of `members` (see `initial_layout`)."""
        self._init(initial_layout(members, partitions, n), n)

    @classmethod
    def from_layout(cls, layout: RingLayout, n: int) -> Ring:
        """A ring routing by a given layout (as agreed through gossip), checked first."""
        _check_layout(layout, n)
        ring = cls.__new__(cls)
        ring._init(layout, n)
        return ring

    def _init(self, layout: RingLayout, n: int) -> None:
        self._layout = layout
        self.members: tuple[str, ...] = layout.members
        self.partitions = layout.partitions
        self.n = n
        self._bits = max(self.partitions.bit_length() - 1, 0)
        self._owners = array("H", layout.owners)
        self._index = {member: i for i, member in enumerate(self.members)}
        # partition -> (primaries, fallbacks): a ring never changes, so each partition's
        # preference list is walked once, not once per request.
        self._splits: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    @property
    def layout(self) -> RingLayout:
        return self._layout

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

    def _walk(self, partition: int) -> list[int]:
        return _native.preference_walk(self._owners, partition, len(self.members))

    def preference_list(self, key: bytes | RoutedKey) -> list[PreferenceEntry]:
        """Every member, in the order a request for `key` tries them: primaries first."""
        position = key.position if isinstance(key, RoutedKey) else _native.hash_key(key)
        walk = self._walk(self.partition_of_position(position))
        return [
            PreferenceEntry(self.members[index], primary=i < self.n) for i, index in enumerate(walk)
        ]

    def split(self, key: RoutedKey) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The key's primaries and then its fallbacks, in preference order (as
        `preference_list` tags them), computed once per partition."""
        return self.split_partition(self.partition_of_position(key.position))

    def split_partition(self, partition: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """`split` of every key in `partition`."""
        split = self._splits.get(partition)
        if split is None:
            members = [self.members[index] for index in self._walk(partition)]
            split = self._splits[partition] = (tuple(members[: self.n]), tuple(members[self.n :]))
        return split

    def primaries(self, key: bytes | RoutedKey) -> list[str]:
        position = key.position if isinstance(key, RoutedKey) else _native.hash_key(key)
        return self.partition_primaries(self.partition_of_position(position))

    def partition_primaries(self, partition: int) -> list[str]:
        """The primaries of every key in `partition`: which members must hold its data."""
        return [self.members[index] for index in self._walk(partition)[: self.n]]

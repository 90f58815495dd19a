"""Anti-entropy: Merkle trees over one partition, and the exchange that diffs two of them.

Read repair only fixes keys that are read; replicas of a partition drift apart in keys no one
reads (a write that reached W of N, a lost hint). Two replicas compare a hash tree of the
partition instead of the data: equal roots mean equal data in one round trip, and otherwise
the walk descends only into differing subtrees, so the cost grows with the difference, not
with the partition (Dynamo §4.7; riak_kv's hashtrees; Cassandra's repair).

Keys are ordered by their 64-bit ring position, so a partition is one contiguous range. Its
tree has LEAVES = 256 segments (the 8 position bits right below the partition bits) under
FANOUT = 16, i.e. three levels: the root, 16 middle nodes, 256 leaves. The exchange needs at
most DEPTH = 3 requests whatever the partition's size, and its answer is a list of segments
whose records the caller swaps with the remote.

Pure code: the caller computes each record's digest, feeds the items and sends the requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LEAVES = 256
FANOUT = 16
DEPTH = 3
HASH_SIZE = 16
MAX_PARTITION_BITS = 16  # Q up to 65536, as the ring allows
_SEGMENT_BITS = 8
_POSITION_BITS = 64

_LEVEL_SIZES = tuple(FANOUT**level for level in range(DEPTH))
assert _LEVEL_SIZES[-1] == LEAVES


def _blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


EMPTY_LEAF = _blake(b"")


def segment_of(position: int, partition_bits: int) -> int:
    """The leaf segment of a 64-bit ring position in a ring of 2**partition_bits partitions."""
    if not 0 <= partition_bits <= MAX_PARTITION_BITS:
        raise ValueError(f"partition_bits must be in 0..{MAX_PARTITION_BITS}, got {partition_bits}")
    if not 0 <= position < 1 << _POSITION_BITS:
        raise ValueError(f"position must be a 64-bit unsigned integer, got {position}")
    shift = _POSITION_BITS - partition_bits - _SEGMENT_BITS
    return (position >> shift) & (LEAVES - 1)


def record_digest(encoded_record: bytes) -> bytes:
    """The digest a tree stores for one record: blake2b, 16 bytes, of its encoded form."""
    return _blake(encoded_record)


def _leaf_hash(pairs: list[tuple[bytes, bytes]]) -> bytes:
    # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    h = hashlib.blake2b(digest_size=HASH_SIZE)
    for key, digest in sorted(pairs):
        h.update(len(key).to_bytes(4, "big"))
        h.update(key)
        h.update(len(digest).to_bytes(4, "big"))
        h.update(digest)
    return h.digest()


def _check_indices(level: int, indices: Iterable[int]) -> tuple[int, ...]:
    if not 0 <= level < DEPTH:
        raise ValueError(f"level must be in 0..{DEPTH - 1}, got {level}")
    size = _LEVEL_SIZES[level]
    checked = tuple(indices)
    for index in checked:
        # Negative indices are rejected, not wrapped: they come from a remote peer.
        if not 0 <= index < size:
            raise ValueError(f"index {index} out of range 0..{size - 1} at level {level}")
    return checked


class MerkleTree:
    """The hash tree of one partition's records; immutable once built.

    `levels[0]` is `(root,)`, `levels[1]` the 16 middle hashes, `levels[2]` the 256 leaves.
    A leaf hashes its (key, digest) pairs sorted by key; an empty leaf is EMPTY_LEAF; an
    inner node hashes its 16 children's hashes concatenated.
    """

    __slots__ = ("key_count", "levels")

    def __init__(self, levels: tuple[tuple[bytes, ...], ...], key_count: int) -> None:
        if tuple(len(level) for level in levels) != _LEVEL_SIZES:
            raise ValueError(f"a tree has levels of sizes {_LEVEL_SIZES}")
        self.levels = levels
        self.key_count = key_count

    @classmethod
    def build(cls, items: Iterable[tuple[int, bytes, bytes]]) -> MerkleTree:
        """Build from (segment, key, digest) items in any order; a repeated key is an error."""
        buckets: list[list[tuple[bytes, bytes]]] = [[] for _ in range(LEAVES)]
        seen: set[bytes] = set()
        for segment, key, digest in items:
            if not 0 <= segment < LEAVES:
                raise ValueError(f"segment must be in 0..{LEAVES - 1}, got {segment}")
            if key in seen:
                raise ValueError(f"key {key!r} appears more than once")
            seen.add(key)
            buckets[segment].append((key, digest))
        leaves = tuple(_leaf_hash(b) if b else EMPTY_LEAF for b in buckets)
        levels = [leaves]
        while len(levels[0]) > 1:
            below = levels[0]
            parents = tuple(
                _blake(b"".join(below[i : i + FANOUT])) for i in range(0, len(below), FANOUT)
            )
            levels.insert(0, parents)
        return cls(tuple(levels), len(seen))

    @property
    def root(self) -> bytes:
        return self.levels[0][0]

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        """The hashes at `level` for `indices`, in order: the remote's side of an exchange.

        Raises ValueError for a level or index out of range (negative ones included).
        """
        checked = _check_indices(level, indices)
        row = self.levels[level]
        return [row[i] for i in checked]

    def __repr__(self) -> str:
        return f"MerkleTree(root={self.root.hex()}, key_count={self.key_count})"


def diff(a: MerkleTree, b: MerkleTree) -> list[int]:
    """The leaf segments whose hashes differ between two trees, ascending."""
    return [i for i, (x, y) in enumerate(zip(a.levels[-1], b.levels[-1], strict=True)) if x != y]


@dataclass(frozen=True, slots=True)
class AskHashes:
    """Ask the remote for `hashes(level, indices)` of its tree."""

    level: int
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExchangeSegments:
    """The exchange is over: swap the records of these segments with the remote.

    Empty when the trees are equal.
    """

    segments: tuple[int, ...]


class TreeExchange:
    """One comparison of the local tree with a remote replica's, driven from this side.

    Top-down: ask the root; if it differs ask all 16 middle hashes; ask the 16 children of
    every differing middle node in one request; the differing leaves are the result. At most
    DEPTH requests. The remote only answers `hashes(level, indices)` from its own tree.
    """

    def __init__(self, local: MerkleTree) -> None:
        self._local = local
        self._asked: AskHashes | None = None
        self.result: ExchangeSegments | None = None

    def start(self) -> AskHashes:
        """The first request (the root); calling it again restarts the exchange."""
        self.result = None
        self._asked = AskHashes(0, (0,))
        return self._asked

    def on_hashes(self, hashes: Sequence[bytes]) -> AskHashes | ExchangeSegments:
        """Take the remote's answer to the last AskHashes; return the next step.

        Raises ValueError when the answer has the wrong count or a hash of the wrong size,
        RuntimeError when no request is outstanding.
        """
        asked = self._asked
        if asked is None:
            raise RuntimeError("no request outstanding: call start() first")
        if len(hashes) != len(asked.indices):
            raise ValueError(f"expected {len(asked.indices)} hashes, got {len(hashes)}")
        for h in hashes:
            if len(h) != HASH_SIZE:
                raise ValueError(f"expected {HASH_SIZE}-byte hashes, got {len(h)} bytes")
        local = self._local.levels[asked.level]
        differing = [i for i, h in zip(asked.indices, hashes, strict=True) if local[i] != h]
        step: AskHashes | ExchangeSegments
        if asked.level == DEPTH - 1 or not differing:
            # Above the leaves this is reached only with nothing differing: equal trees.
            step = self.result = ExchangeSegments(tuple(differing))
            self._asked = None
        else:
            children = tuple(c for i in differing for c in range(i * FANOUT, (i + 1) * FANOUT))
            step = self._asked = AskHashes(asked.level + 1, children)
        return step

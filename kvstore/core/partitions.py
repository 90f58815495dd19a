"""Partitions as key ranges: which ring positions a partition, or some of its Merkle-tree
segments, cover. Storage keys start with the position, so each range is one storage scan
(anti-entropy, ownership handoff, tombstone GC)."""

from __future__ import annotations

from collections.abc import Sequence

from kvstore.core.antientropy import LEAVES
from kvstore.core.ring import Ring
from kvstore.errors import InvalidArgument


def partition_bits(ring: Ring) -> int:
    return ring.partitions.bit_length() - 1


def partition_range(ring: Ring, partition: int) -> tuple[int, int]:
    """[low, high) of ring positions in the partition."""
    shift = 64 - partition_bits(ring)
    return partition << shift, (partition + 1) << shift


def check_partition(ring: Ring, partition: int) -> None:
    """A partition number from a peer is checked, not trusted."""
    if not 0 <= partition < ring.partitions:
        raise InvalidArgument(f"partition must be in 0..{ring.partitions - 1}, got {partition}")


def segment_ranges(ring: Ring, partition: int, segments: Sequence[int]) -> list[tuple[int, int]]:
    """The [low, high) position ranges the segments (tree leaves) of a partition cover, in
    order, adjacent segments joined: a segment is a contiguous slice of its partition."""
    low, high = partition_range(ring, partition)
    width = (high - low) // LEAVES
    ranges: list[tuple[int, int]] = []
    for segment in sorted(set(segments)):
        # Checked, not trusted: the segments come from a peer, and one past the last would
        # read the next partition.
        if not 0 <= segment < LEAVES:
            raise InvalidArgument(f"segment must be in 0..{LEAVES - 1}, got {segment}")
        start = low + segment * width
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + width)
        else:
            ranges.append((start, start + width))
    return ranges

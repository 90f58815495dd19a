"""Merkle trees over one partition and the exchange that diffs two (kvstore.core.antientropy)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.core.antientropy import (
    DEPTH,
    EMPTY_LEAF,
    FANOUT,
    LEAVES,
    AskHashes,
    ExchangeSegments,
    MerkleTree,
    TreeExchange,
    diff,
    record_digest,
    segment_of,
)

Item = tuple[int, bytes, bytes]


def item(segment: int, key: bytes, value: bytes = b"v") -> Item:
    return (segment, key, record_digest(value))


def sample_items(count: int, seed: int = 1) -> list[Item]:
    rng = random.Random(seed)
    return [item(rng.randrange(LEAVES), b"key-%d" % i, b"value-%d" % i) for i in range(count)]


def run_exchange(local: MerkleTree, remote: MerkleTree) -> tuple[ExchangeSegments, int]:
    """Play an exchange against `remote`; return the result and the number of requests."""
    exchange = TreeExchange(local)
    step: AskHashes | ExchangeSegments = exchange.start()
    asks = 0
    while isinstance(step, AskHashes):
        asks += 1
        step = exchange.on_hashes(remote.hashes(step.level, step.indices))
    return step, asks


# ---- segment_of, record_digest ----


@pytest.mark.parametrize(
    ("position", "bits", "segment"),
    [
        (0, 0, 0),
        (2**64 - 1, 0, 255),
        (0xAB << 56, 0, 0xAB),
        ((0xAB << 56) - 1, 0, 0xAA),
        (0, 8, 0),
        (2**64 - 1, 8, 255),
        (0x12_34 << 48, 8, 0x34),
        ((0x12_35 << 48) - 1, 8, 0x34),
        (0x12_35 << 48, 8, 0x35),
        (2**64 - 1, 16, 255),
        (0xFFFF_01 << 40, 16, 0x01),
        ((0xFFFF_01 << 40) - 1, 16, 0x00),
        (1 << 40, 16, 1),
        ((1 << 40) - 1, 16, 0),
    ],
)
def test_segment_of_boundaries(position: int, bits: int, segment: int) -> None:
    assert segment_of(position, bits) == segment


@pytest.mark.parametrize("bits", [-1, 17, 64])
def test_segment_of_rejects_bad_partition_bits(bits: int) -> None:
    with pytest.raises(ValueError, match="partition_bits"):
        segment_of(0, bits)


@pytest.mark.parametrize("position", [-1, 2**64])
def test_segment_of_rejects_positions_outside_64_bits(position: int) -> None:
    with pytest.raises(ValueError, match="position"):
        segment_of(position, 8)


@given(position=st.integers(0, 2**64 - 1), bits=st.integers(0, 16))
def test_segments_split_a_partition_into_contiguous_ordered_ranges(
    position: int, bits: int
) -> None:
    # Within a partition (fixed top bits), the segment is the next 8 bits: ordered by position.
    segment = segment_of(position, bits)
    assert 0 <= segment < LEAVES
    width = 1 << (64 - bits - 8)
    start = position - position % width
    assert segment_of(start, bits) == segment
    assert segment_of(start + width - 1, bits) == segment
    if segment < LEAVES - 1:
        assert segment_of(start + width, bits) == segment + 1


def test_record_digest() -> None:
    assert len(record_digest(b"x")) == 16
    assert record_digest(b"x") == record_digest(b"x")
    assert record_digest(b"x") != record_digest(b"y")


# ---- building trees ----


def test_tree_shape() -> None:
    tree = MerkleTree.build(sample_items(500))
    assert DEPTH == 3
    assert [len(level) for level in tree.levels] == [1, FANOUT, LEAVES]
    assert tree.levels[0] == (tree.root,)
    assert all(len(h) == 16 for level in tree.levels for h in level)
    assert tree.key_count == 500


def test_empty_tree() -> None:
    tree = MerkleTree.build([])
    assert tree.key_count == 0
    assert tree.levels[-1] == (EMPTY_LEAF,) * LEAVES
    assert tree.root == MerkleTree.build(iter(())).root
    assert tree.root != MerkleTree.build([item(0, b"k")]).root


def test_equal_items_in_any_order_give_equal_trees() -> None:
    items = sample_items(300)
    shuffled = list(items)
    random.Random(9).shuffle(shuffled)
    a, b = MerkleTree.build(items), MerkleTree.build(shuffled)
    assert a.levels == b.levels
    assert diff(a, b) == []


def test_length_prefixes_keep_pairs_apart() -> None:
    a = MerkleTree.build([(3, b"ab", b"c")])
    b = MerkleTree.build([(3, b"a", b"bc")])
    assert a.root != b.root
    assert diff(a, b) == [3]


def test_a_repeated_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="more than once"):
        MerkleTree.build([item(1, b"k", b"a"), item(1, b"k", b"b")])
    with pytest.raises(ValueError, match="more than once"):
        MerkleTree.build([item(1, b"k"), item(2, b"k")])


@pytest.mark.parametrize("segment", [-1, LEAVES])
def test_a_segment_out_of_range_is_rejected(segment: int) -> None:
    with pytest.raises(ValueError, match="segment"):
        MerkleTree.build([item(segment, b"k")])


def test_hashes() -> None:
    tree = MerkleTree.build(sample_items(100))
    assert tree.hashes(0, [0]) == [tree.root]
    assert tree.hashes(1, [15, 0]) == [tree.levels[1][15], tree.levels[1][0]]
    assert tree.hashes(2, range(LEAVES)) == list(tree.levels[2])
    assert tree.hashes(2, []) == []


@pytest.mark.parametrize(
    ("level", "indices", "match"),
    [
        (-1, [0], "level"),
        (3, [0], "level"),
        (0, [1], "index"),
        (1, [16], "index"),
        (2, [0, 256], "index"),
        (2, [-1], "index"),
    ],
)
def test_hashes_rejects_bad_levels_and_indices(level: int, indices: list[int], match: str) -> None:
    tree = MerkleTree.build(sample_items(10))
    with pytest.raises(ValueError, match=match):
        tree.hashes(level, indices)


# ---- single differences ----


def test_one_changed_digest_differs_in_exactly_its_segment() -> None:
    items = sample_items(400)
    segment, key, _ = items[123]
    changed = list(items)
    changed[123] = item(segment, key, b"another value")
    a, b = MerkleTree.build(items), MerkleTree.build(changed)
    assert diff(a, b) == [segment]
    assert run_exchange(a, b)[0] == ExchangeSegments((segment,))
    assert a.levels[1][segment // FANOUT] != b.levels[1][segment // FANOUT]


def test_one_missing_key_differs_in_exactly_its_segment() -> None:
    items = sample_items(400)
    segment = items[7][0]
    a, b = MerkleTree.build(items), MerkleTree.build(items[:7] + items[8:])
    assert b.key_count == 399
    assert diff(a, b) == [segment]
    assert run_exchange(a, b)[0] == ExchangeSegments((segment,))


def test_one_extra_key_differs_in_exactly_its_segment() -> None:
    items = sample_items(400)
    a, b = MerkleTree.build(items), MerkleTree.build([*items, item(200, b"extra")])
    assert diff(a, b) == [200]
    assert run_exchange(b, a)[0] == ExchangeSegments((200,))


# ---- the exchange ----


def test_exchange_of_equal_trees_takes_one_request() -> None:
    tree = MerkleTree.build(sample_items(50))
    exchange = TreeExchange(tree)
    assert exchange.start() == AskHashes(0, (0,))
    assert exchange.on_hashes([tree.root]) == ExchangeSegments(())
    assert exchange.result == ExchangeSegments(())


def test_exchange_steps() -> None:
    items = sample_items(400)
    local = MerkleTree.build(items)
    remote = MerkleTree.build([*items, item(0x21, b"x"), item(0x2F, b"y"), item(0xF0, b"z")])
    exchange = TreeExchange(local)
    ask = exchange.start()
    step = exchange.on_hashes(remote.hashes(ask.level, ask.indices))
    assert step == AskHashes(1, tuple(range(FANOUT)))
    step = exchange.on_hashes(remote.hashes(step.level, step.indices))
    assert step == AskHashes(2, (*range(0x20, 0x30), *range(0xF0, 0x100)))
    assert exchange.result is None
    step = exchange.on_hashes(remote.hashes(step.level, step.indices))
    assert step == ExchangeSegments((0x21, 0x2F, 0xF0))
    assert exchange.result == step


def test_exchange_rejects_a_wrong_count_or_size() -> None:
    tree = MerkleTree.build(sample_items(50))
    exchange = TreeExchange(tree)
    exchange.start()
    with pytest.raises(ValueError, match="expected 1 hashes, got 2"):
        exchange.on_hashes([tree.root, tree.root])
    with pytest.raises(ValueError, match="expected 1 hashes, got 0"):
        exchange.on_hashes([])
    with pytest.raises(ValueError, match="16-byte"):
        exchange.on_hashes([b"short"])
    other = MerkleTree.build([])
    step = exchange.on_hashes([other.root])  # the bad answers changed nothing
    assert step == AskHashes(1, tuple(range(FANOUT)))
    with pytest.raises(ValueError, match="expected 16 hashes, got 15"):
        exchange.on_hashes(other.levels[1][:15])


def test_exchange_needs_start_and_ends() -> None:
    tree = MerkleTree.build([])
    exchange = TreeExchange(tree)
    with pytest.raises(RuntimeError, match="start"):
        exchange.on_hashes([tree.root])
    exchange.start()
    exchange.on_hashes([tree.root])
    with pytest.raises(RuntimeError, match="start"):
        exchange.on_hashes([tree.root])
    assert exchange.start() == AskHashes(0, (0,))  # and can run again


# ---- properties ----

keys_st = st.binary(min_size=1, max_size=6)


def segment_of_key(key: bytes) -> int:
    # Few distinct segments make several keys share a leaf, as in a full partition.
    return zlib.crc32(key) % 64 * 4


@st.composite
def item_set_pairs(draw: st.DrawFn) -> tuple[list[Item], list[Item]]:
    """Two replicas' items: a shared base, each side changing, dropping and adding some.

    A key's segment is a function of the key (its position), as on a real node.
    """
    keys = draw(st.lists(keys_st, unique=True, max_size=60))
    base = {k: (segment_of_key(k), draw(st.binary(max_size=4))) for k in keys}

    def variant() -> list[Item]:
        out: dict[bytes, tuple[int, bytes]] = {}
        for key, (segment, value) in base.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "change", "drop"]))
            if action == "keep":
                out[key] = (segment, value)
            elif action == "change":
                out[key] = (segment, value + b"!")
        for key in draw(st.lists(keys_st, max_size=5)):
            if key not in base:
                out[key] = (segment_of_key(key), b"new")
        return [(segment, key, record_digest(value)) for key, (segment, value) in out.items()]

    return variant(), variant()


def expected_diff(a: Iterable[Item], b: Iterable[Item]) -> list[int]:
    """The segments holding a key whose digest differs or that only one side has."""
    da = {key: (segment, digest) for segment, key, digest in a}
    db = {key: (segment, digest) for segment, key, digest in b}
    return sorted(
        {(da.get(k) or db[k])[0] for k in da.keys() | db.keys() if da.get(k) != db.get(k)}
    )


@settings(max_examples=300, deadline=None)
@given(pair=item_set_pairs())
def test_exchange_finds_exactly_the_differing_segments(pair: tuple[list[Item], list[Item]]) -> None:
    a_items, b_items = pair
    a, b = MerkleTree.build(a_items), MerkleTree.build(b_items)
    expected = expected_diff(a_items, b_items)
    assert diff(a, b) == expected
    assert diff(b, a) == expected
    for local, remote in ((a, b), (b, a)):
        result, asks = run_exchange(local, remote)
        assert result == ExchangeSegments(tuple(expected))
        assert 1 <= asks <= DEPTH
        assert (asks == 1) == (not expected)


@settings(max_examples=100, deadline=None)
@given(
    items=st.dictionaries(keys_st, st.tuples(st.integers(0, LEAVES - 1), st.binary(max_size=4))),
    seed=st.integers(0, 2**32),
)
def test_order_does_not_matter(items: dict[bytes, tuple[int, bytes]], seed: int) -> None:
    listed = [(segment, key, record_digest(value)) for key, (segment, value) in items.items()]
    shuffled = list(listed)
    random.Random(seed).shuffle(shuffled)
    a, b = MerkleTree.build(listed), MerkleTree.build(shuffled)
    assert a.root == b.root
    assert a.key_count == b.key_count == len(items)
    assert run_exchange(a, b) == (ExchangeSegments(()), 1)

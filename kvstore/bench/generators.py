"""Key choosers with YCSB's semantics, so figures compare with published YCSB runs.

- uniform: every loaded key equally likely.
- zipfian: Gray et al.'s generator ("Quickly generating billion-record synthetic databases",
  SIGMOD 1994) with constant 0.99, as YCSB; *scrambled* like YCSB's ScrambledZipfianGenerator:
  the popular items are spread over the key space by an FNV-1a hash instead of being the
  lowest key numbers.
- latest: zipfian over recency: the most recently inserted keys are the most likely.

All draw from a caller-supplied random.Random, so a seed replays a run exactly.
"""

from __future__ import annotations

import random
from typing import Protocol

ZIPFIAN_CONSTANT = 0.99
# YCSB's scrambled zipfian draws from 10 billion items and hashes into the key space; the zeta
# of 10^10 items at theta 0.99 is a constant (computing it would take minutes).
SCRAMBLED_ITEMS = 10_000_000_000
SCRAMBLED_ZETAN = 26.46902820178302

_FNV_OFFSET_64 = 0xCBF29CE484222325
_FNV_PRIME_64 = 1099511628211
_MASK_64 = (1 << 64) - 1


def fnv1a_64(value: int) -> int:
    """FNV-1a over the 8 little-endian bytes of a 64-bit integer (YCSB's fnvhash64), as a
    non-negative number."""
    h = _FNV_OFFSET_64
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * _FNV_PRIME_64) & _MASK_64
        value >>= 8
    signed = h - (1 << 64) if h >= 1 << 63 else h
    return abs(signed)


def zeta(n: int, theta: float, start: int = 0, initial: float = 0.0) -> float:
    """sum(1 / i**theta for i in start+1..n), continuing from `initial` (the sum up to start)."""
    total = initial
    for i in range(start + 1, n + 1):
        total += 1.0 / i**theta
    return total


class KeyChooser(Protocol):
    def next(self, rng: random.Random) -> int:
        """A key number in [0, item count)."""
        ...


class Uniform:
    def __init__(self, items: int) -> None:
        if items < 1:
            raise ValueError("uniform needs at least one item")
        self.items = items

    def next(self, rng: random.Random) -> int:
        return rng.randrange(self.items)


class Zipfian:
    """Item 0 is the most popular, then 1, ... (unscrambled). `items` may grow (latest)."""

    def __init__(
        self,
        items: int,
        theta: float = ZIPFIAN_CONSTANT,
        zetan: float | None = None,
    ) -> None:
        if items < 1:
            raise ValueError("zipfian needs at least one item")
        if not 0 < theta < 1:
            raise ValueError("theta must be in (0, 1)")
        self.theta = theta
        self._alpha = 1.0 / (1.0 - theta)
        self._zeta2 = zeta(2, theta)
        self._items = 0
        self._zetan = 0.0
        self._resize(items, zetan)

    def _resize(self, items: int, zetan: float | None = None) -> None:
        if zetan is not None:
            self._zetan = zetan
        elif items > self._items:
            self._zetan = zeta(items, self.theta, self._items, self._zetan)
        else:
            self._zetan = zeta(items, self.theta)
        self._items = items
        self._eta = (1 - (2.0 / items) ** (1 - self.theta)) / (1 - self._zeta2 / self._zetan)

    @property
    def items(self) -> int:
        return self._items

    def next(self, rng: random.Random, items: int | None = None) -> int:
        if items is not None and items != self._items:
            self._resize(items)
        u = rng.random()
        uz = u * self._zetan
        if uz < 1.0:
            return 0
        if uz < 1.0 + 0.5**self.theta:
            return 1
        value = int(self._items * (self._eta * u - self._eta + 1) ** self._alpha)
        return min(value, self._items - 1)


class ScrambledZipfian:
    """Zipfian popularity, with the popular items scattered over [0, items)."""

    def __init__(self, items: int) -> None:
        if items < 1:
            raise ValueError("zipfian needs at least one item")
        self.items = items
        self._zipfian = Zipfian(SCRAMBLED_ITEMS, zetan=SCRAMBLED_ZETAN)

    def next(self, rng: random.Random) -> int:
        return fnv1a_64(self._zipfian.next(rng)) % self.items


class Latest:
    """The newest keys are the most popular: zipfian over distance from the latest insert."""

    def __init__(self, inserted: InsertCounter) -> None:
        self._inserted = inserted
        self._zipfian = Zipfian(max(inserted.count, 1))

    def next(self, rng: random.Random) -> int:
        count = max(self._inserted.count, 1)
        return count - 1 - self._zipfian.next(rng, count)


class InsertCounter:
    """Key numbers for inserts: continues after the loaded records."""

    def __init__(self, start: int) -> None:
        self.count = start

    def take(self) -> int:
        key = self.count
        self.count += 1
        return key


def make_chooser(name: str, records: int, inserted: InsertCounter) -> KeyChooser:
    if name == "uniform":
        return Uniform(records)
    if name == "zipfian":
        return ScrambledZipfian(records)
    if name == "latest":
        return Latest(inserted)
    raise ValueError(f"unknown key distribution {name!r} (uniform, zipfian, latest)")

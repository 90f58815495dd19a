"""Request validation: every limit a request must respect, checked before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass

from kvstore import _native
from kvstore.core.versions import KeyState
from kvstore.errors import (
    BatchTooLarge,
    InvalidArgument,
    InvalidContext,
    InvalidKey,
    InvalidOption,
    TooManySiblings,
    ValueTooLarge,
)

# Hard ceilings: configurable limits may be lowered freely but not raised past these,
# because gRPC message sizes and memory per request are sized from them.
KEY_BYTES_CEILING = 64 * 1024
VALUE_BYTES_CEILING = 64 * 1024 * 1024
SIBLINGS_CEILING = 1024
# The most entries (vector entries plus holes) a client's context may hold at all: one entry
# per actor that ever wrote the key, one hole per concurrent sibling its holder was not
# shown. More means it is not ours (kvstore.storage.codec refuses it).
MAX_CONTEXT_ENTRIES = 4096
# The least max_clock_entries: room for an honest clock (N actors and some fallbacks, a
# hole per unseen sibling) however small the other limits are set.
MIN_CLOCK_ENTRIES = 16
TIMEOUT_MS_CEILING = 10 * 60 * 1000
# How many times max_siblings a state from another replica may hold (see check_state).
REPLICATED_SIBLINGS_FACTOR = 2
# A put's write id: client-generated (kvstore's client makes 16 random bytes), stored with
# its sibling. The same bound holds for records (kvstore.storage.codec). Not counted in
# max_value_bytes: it is metadata of the write, and this bound keeps it small.
MAX_WRITE_ID_BYTES: int = _native.MAX_WRITE_ID_BYTES
# Keys in one get_many / put_many / delete_many: past it the batch is refused whole
# (BatchTooLarge). The ceiling keeps a batch's work (and its answer) within one message.
BATCH_ITEMS_CEILING = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_siblings: int = 32
    # How large (vector entries plus holes) a write may make a key's clock with entries its
    # context brings. An honest context names only actors that wrote the key and holes for
    # siblings its holder was not shown; a forged one could name thousands, and each would
    # stay in the record for ever. The coordinator's own entry is always allowed.
    max_clock_entries: int = 256
    request_timeout_ms: int = 5_000
    max_request_timeout_ms: int = 60_000
    max_batch_items: int = 1_000
    # Client requests one node coordinates at once (a batch counts one per item) and the
    # bytes they hold: past either the node answers Overloaded (RESOURCE_EXHAUSTED).
    max_inflight_requests: int = 4_096
    max_inflight_request_bytes: int = 256 * 1024 * 1024
    # Connections a node keeps (clients and peers; a peer holds two) and how long one with
    # no call in flight is kept.
    max_connections: int = 1_024
    connection_idle_ms: int = 300_000

    def check(self) -> None:
        _in_range("max_key_bytes", self.max_key_bytes, 1, KEY_BYTES_CEILING)
        _in_range("max_value_bytes", self.max_value_bytes, 0, VALUE_BYTES_CEILING)
        _in_range("max_siblings", self.max_siblings, 1, SIBLINGS_CEILING)
        _in_range(
            "max_clock_entries", self.max_clock_entries, MIN_CLOCK_ENTRIES, MAX_CONTEXT_ENTRIES
        )
        _in_range("max_request_timeout_ms", self.max_request_timeout_ms, 1, TIMEOUT_MS_CEILING)
        _in_range("request_timeout_ms", self.request_timeout_ms, 1, self.max_request_timeout_ms)
        _in_range("max_batch_items", self.max_batch_items, 1, BATCH_ITEMS_CEILING)
        # A batch the node accepts must fit within the bound: at least max_batch_items.
        _in_range(
            "max_inflight_requests", self.max_inflight_requests, self.max_batch_items, 1 << 20
        )
        _in_range("max_inflight_request_bytes", self.max_inflight_request_bytes, 1 << 20, 1 << 40)
        _in_range("max_connections", self.max_connections, 16, 1 << 20)
        _in_range("connection_idle_ms", self.connection_idle_ms, 1_000, 86_400_000)

    def check_batch(self, items: int) -> None:
        if items > self.max_batch_items:
            raise BatchTooLarge(
                f"a batch of {items} items; the limit is {self.max_batch_items}"
                " (max_batch_items): split it"
            )

    def check_key(self, key: bytes) -> None:
        if not isinstance(key, bytes):
            raise InvalidKey(f"key must be bytes, not {type(key).__name__}")
        if not key:
            raise InvalidKey("key must not be empty")
        if len(key) > self.max_key_bytes:
            raise InvalidKey(f"key is {len(key)} bytes; the limit is {self.max_key_bytes}")

    def check_value(self, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            raise ValueTooLarge(f"value is {len(value)} bytes; the limit is {self.max_value_bytes}")

    def check_write_id(self, write_id: bytes) -> None:
        if len(write_id) > MAX_WRITE_ID_BYTES:
            raise InvalidArgument(
                f"write_id is {len(write_id)} bytes; the limit is {MAX_WRITE_ID_BYTES}"
                " (MAX_WRITE_ID_BYTES): send the 16 random bytes of one logical write"
            )

    def check_clock_growth(self, before: KeyState, after: KeyState, actor: str) -> None:
        """Refuse a write that grows the key's clock past max_clock_entries by what its
        context brought (what was there before, and `actor`'s own entry, are allowed)."""
        grown = after.clock.entries
        if grown <= self.max_clock_entries:
            return
        allowed = before.clock.entries + (actor not in before.clock.vector)
        if grown > allowed:
            raise InvalidContext(
                f"the context would grow the key's clock to {grown} entries; the limit is"
                f" {self.max_clock_entries} (max_clock_entries): read the key and write"
                " with the context the read returned"
            )

    def check_state(self, key: bytes, state: KeyState) -> None:
        """A state another node sent (a merge, a repair, a hint, a page of a transfer) obeys
        the limits a client's write does: a member is trusted to be a member, not to respect
        them. Sibling count: a write leaves at most max_siblings, and a merge of two sides
        that each took concurrent writes during a partition may hold up to twice that; more
        than that no honest replica makes."""
        self.check_key(key)
        if len(state.siblings) > REPLICATED_SIBLINGS_FACTOR * self.max_siblings:
            raise TooManySiblings(
                f"a replicated state of {len(state.siblings)} siblings; at most"
                f" {REPLICATED_SIBLINGS_FACTOR * self.max_siblings} are taken"
                f" ({REPLICATED_SIBLINGS_FACTOR} x max_siblings)"
            )
        for sibling in state.siblings:
            if sibling.value is not None:
                self.check_value(sibling.value)
        if state.clock.entries > MAX_CONTEXT_ENTRIES:
            raise InvalidContext(
                f"a replicated state's clock has {state.clock.entries} entries; at most"
                f" {MAX_CONTEXT_ENTRIES} are taken"
            )

    def timeout_ms(self, requested: int) -> int:
        """The deadline for a request: the node default when 0, else the request's own."""
        if requested == 0:
            return self.request_timeout_ms
        if requested < 0 or requested > self.max_request_timeout_ms:
            raise InvalidOption(
                f"timeout_ms must be in 1..{self.max_request_timeout_ms}, got {requested}"
            )
        return requested


DEFAULT_LIMITS = Limits()


def _in_range(name: str, value: int, low: int, high: int) -> None:
    from kvstore.errors import ConfigError

    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Quorum:
    """Replication factor and default read/write quorums for the cluster."""

    n: int = 3
    r: int = 2
    w: int = 2

    def check(self) -> None:
        _in_range("n", self.n, 1, 64)
        _in_range("r", self.r, 1, self.n)
        _in_range("w", self.w, 1, self.n)

    def read_quorum(self, requested: int) -> int:
        return self._pick("r", requested, self.r)

    def write_quorum(self, requested: int) -> int:
        return self._pick("w", requested, self.w)

    def _pick(self, name: str, requested: int, default: int) -> int:
        if requested == 0:
            return default
        if not 1 <= requested <= self.n:
            raise InvalidOption(f"{name} must be in 1..n={self.n}, got {requested}")
        return requested

"""The write ids this node coordinated lately (issue 16), so that a retry arriving after its
write was replaced is answered as applied.

A retry of a put carries its first try's write id. A coordinator whose state holds a
sibling of that id answers it from that sibling (Replica.write). Once a later write has
replaced the sibling, the state keeps only its dot, in the clock, and no longer knows the
id: applying the retry then would bring the old value back as a new sibling. This map
remembers, for a short while, which dot each write id this node made got: a retry whose
dot the key's clock covers is answered as applied.

The Replica keeps a second map of this kind: the ids of the siblings it dropped (replaced),
so that a late twin of such a write is dropped too (Replica._absorb_replaced).

In memory and bounded: it covers a client's retries and hedges (seconds), not a restart (a
retry landing on another node applies it again, and the two twins read as one write:
kvstore.core.versions). Keys are held by their ring position, so an entry is a few dozen
bytes whatever the key's size.
"""

from __future__ import annotations

from collections import OrderedDict

from kvstore.core.versions import Dot

# How many write ids a node remembers, and for how long (seconds). A client retries within
# its request timeout (seconds); 100k ids cover ~800 puts/s for the whole window.
RECENT_WRITE_IDS = 100_000
RECENT_WRITE_ID_SECONDS = 120.0


class RecentWriteIds:
    def __init__(
        self, capacity: int = RECENT_WRITE_IDS, ttl_s: float = RECENT_WRITE_ID_SECONDS
    ) -> None:
        if capacity < 1 or ttl_s <= 0:
            raise ValueError("a recent write id map needs room and time")
        self._capacity = capacity
        self._ttl_s = ttl_s
        # write id -> (key position, dot, when it expires); oldest first.
        self._entries: OrderedDict[bytes, tuple[int, Dot, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, write_id: bytes, position: int, dot: Dot, now: float) -> None:
        self._expire(now)
        self._entries[write_id] = (position, dot, now + self._ttl_s)
        self._entries.move_to_end(write_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def dot_of(self, write_id: bytes, position: int, now: float) -> Dot | None:
        """The dot this node made for `write_id` on the key at `position`, if remembered."""
        self._expire(now)
        entry = self._entries.get(write_id)
        if entry is None or entry[0] != position:
            return None
        return entry[1]

    def _expire(self, now: float) -> None:
        # Entries are in the order they were made, all with one lifetime: the oldest first.
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first[2] > now:
                return
            entries.popitem(last=False)

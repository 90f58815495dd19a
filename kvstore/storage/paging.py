"""Records moved between nodes in pages bounded in bytes (anti-entropy, ownership handoff,
hint delivery), so a partition of any size moves in frames that fit.

The gRPC frame limit (kvstore.node.server.max_message_bytes) is the largest record plus
1 MiB of slack, ~33 MB with default limits but barely over 1 MiB with small ones: a budget
of that slack fits a frame whatever the limits, and at 1 MiB the per-call latency is still
small beside the transfer. A page stops before the record that would take it past the
budget, but always holds one: one record with every sibling always fits one frame, and a
page that holds none would never advance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kvstore.core.limits import Limits
from kvstore.core.transport import PeerFailure
from kvstore.core.versions import KeyState
from kvstore.errors import KvError

PAGE_BYTES = 1024 * 1024

# What a record costs on the wire beside its key and its encoded state: the field tags and
# length prefixes of KeyedRecord / ReplicaMergeRequest, a few bytes; rounded up.
RECORD_FRAMING_BYTES = 16

# (storage key, key, encoded record), as Storage.scan yields them.
StoredRecord = tuple[bytes, bytes, bytes]


def stored_record_bytes(key: bytes, raw: bytes) -> int:
    """A cheap estimate of a stored record's size in a page: the stored encoding is the
    KeyRecord message the page carries, so no re-encoding is needed to measure it."""
    return len(key) + len(raw) + RECORD_FRAMING_BYTES


def take_page(
    scan: Iterable[StoredRecord], after: bytes, max_records: int | None = None
) -> tuple[list[StoredRecord], bytes, bool]:
    """The next page of a scan that starts after the storage key `after`: records up to
    PAGE_BYTES (and `max_records`), at least one; the storage key of its last record (`after`
    for an empty page), to pass as `after` for the next page; and whether the scan ended.

    The record that does not fit is read and dropped, not kept: the next page scans again
    from `last`, so no storage iterator outlives one page.
    """
    page: list[StoredRecord] = []
    page_bytes = 0
    last = after
    for record in scan:
        _, key, raw = record
        size = stored_record_bytes(key, raw)
        full = page_bytes + size > PAGE_BYTES or len(page) == max_records
        if page and full:
            return page, last, False
        page.append(record)
        page_bytes += size
        last = record[0]
    return page, last, True


def check_page_advances(source: str, records: int, last: bytes, after: bytes, done: bool) -> None:
    """A page that is not the last must hold records and move the cursor: a peer that
    breaks this (a bug, another version) would otherwise keep a paging loop going for ever."""
    if not done and (not records or last <= after):
        raise PeerFailure(f"{source} sent a page that does not advance")


def check_page_records(
    source: str,
    records: Sequence[tuple[bytes, KeyState]],
    limits: Limits,
    asked_for: Callable[[bytes], bool],
) -> list[tuple[bytes, KeyState]]:
    """The records of a page a peer sent that may be merged: a page holding a key this node
    did not ask for (outside the partition or segments requested) is forged and refused
    whole (PeerFailure); a record past the limits a client's write obeys (a value past
    max_value_bytes, too many siblings: forged, or written before the limits were lowered)
    is left out alone, so that one record never blocks a transfer. Returns the records to
    merge (the caller counts those left out)."""
    taken = []
    for key, state in records:
        if not asked_for(key):
            raise PeerFailure(f"{source} sent a record of a key outside the range asked for")
        try:
            limits.check_state(key, state)
        except KvError:
            continue
        taken.append((key, state))
    return taken

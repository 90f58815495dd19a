"""The Replica: this node's own storage role. It answers reads as a replica (with the hints
it keeps as a fallback), merges states other nodes send, keeps hints for absent primaries,
and applies a coordinated write: the dotted-version-vector write rule run atomically on
local storage (riak_kv's vnode does the same), so only a replica ever makes a dot.

Writes and merges are staged and made durable by the group commit (node.commits): the
awaitable each returns is done once the change is durable; the read-merge-write of a key
happens at once, with no await between, so it is atomic."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from kvstore.core import versions
from kvstore.core.limits import Limits
from kvstore.core.requests import NOT_FOUND, GetAnswer
from kvstore.core.ring import RoutedKey, routed
from kvstore.core.versions import EMPTY, KeyState
from kvstore.errors import InvalidArgument, KvError, StorageError, TooManySiblings
from kvstore.node.clock import Clock
from kvstore.node.commits import GroupCommit
from kvstore.node.writeids import RecentWriteIds
from kvstore.storage.codec import MAX_RECORD_COUNTER, encode_context, encode_record
from kvstore.storage.engine import Storage


@dataclass(frozen=True, slots=True)
class Written:
    """A coordinated write as staged: the key's new state, its encoding (shipped as is to
    the other replicas), the dot the write made, and when it is durable. `retried`: the
    write's id was already applied here (a retry): nothing was staged, `dot` is the dot the
    write got then, and `state` the key's state now."""

    state: KeyState
    record: bytes
    dot: versions.Dot
    durable: asyncio.Future[None]
    retried: bool = False


class _AlreadyApplied(Exception):
    """Raised inside a write's change to stage nothing: the write id is applied here."""

    def __init__(self, state: KeyState, dot: versions.Dot) -> None:
        super().__init__()
        self.state = state
        self.dot = dot


def answer(key: RoutedKey, state: KeyState | None) -> GetAnswer:
    """A get's answer: the live values and a context covering exactly them."""
    if state is None:
        return NOT_FOUND
    return GetAnswer(
        values=tuple(state.live_values), context=encode_context(state.clock, key), found=state.found
    )


class Replica:
    def __init__(
        self,
        address: str,
        actor: str,
        storage: Storage,
        limits: Limits,
        clock: Clock,
        counters: Counter[str],
        hint_max_bytes: int,
    ) -> None:
        self.address = address
        self.actor = actor
        self._storage = storage
        self._limits = limits
        self._clock = clock
        self._counters = counters
        self._hint_max_bytes = hint_max_bytes
        self._commits = GroupCommit(storage, counters)
        self._recent_write_ids = RecentWriteIds()
        # Write ids of siblings this replica dropped lately (a write or a merge replaced
        # them): a twin of such a write arriving later is stale (see _absorb_replaced).
        self._replaced_write_ids = RecentWriteIds()

    def local_get(self, key: bytes) -> GetAnswer:
        """What this node's data holds for the key (hints left out): the LocalGet RPC."""
        self._limits.check_key(key)
        where = routed(key)
        return answer(where, self._storage.get(where))

    def read(self, key: bytes | RoutedKey, data_only: bool = False) -> KeyState | None:
        """This node's answer as a replica: its data merged with hints it keeps for others,
        so a fallback standing in for a primary answers what it was given. `data_only`
        (tombstone GC's read): the data alone, a tombstone purged here lately included, so
        a purge that ran ahead on this replica can be completed."""
        if not isinstance(key, RoutedKey):
            self._limits.check_key(key)
            key = routed(key)  # hashed once for the data and the hints
        else:
            self._limits.check_key(key.key)
        if data_only:
            return self._storage.held(key)
        state = self._storage.get(key)
        hints = self._storage.hints_for_key(key)
        if not hints:
            return state
        return versions.merge_all([state or EMPTY, *hints])

    def read_record(self, key: bytes, data_only: bool = False) -> bytes | None:
        """`read`'s answer encoded (a KeyRecord), for a peer: the stored bytes as they are
        when no hint adds to them (nothing decoded or encoded)."""
        self._limits.check_key(key)
        where = routed(key)
        if data_only:
            held = self._storage.held(where)
            return None if held is None else encode_record(held)
        hints = self._storage.hints_for_key(where)
        if not hints:
            return self._storage.get_encoded(where)
        return encode_record(versions.merge_all([self._storage.get(where) or EMPTY, *hints]))

    def merge(
        self, key: bytes | RoutedKey, state: KeyState, hint_for: str = ""
    ) -> asyncio.Future[None]:
        """Merge a state another node sent; as a hint when this node stands in for the
        primary `hint_for`. Done once durable. Raises at once (nothing changed) for a key
        out of bounds, or when the hints are full."""
        self._limits.check_state(key.key if isinstance(key, RoutedKey) else key, state)
        if hint_for and hint_for != self.address:
            self._storage.store_hint(
                hint_for, key, state, self._clock.wall_ms(), self._hint_max_bytes
            )
            self._counters["hints_stored"] += 1
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        self._stage_merge(key, state)
        return self._commits.durable()

    def merge_batch(self, items: Iterable[tuple[bytes, KeyState]]) -> asyncio.Future[None]:
        """Merge many states (hint delivery, anti-entropy pushes); done once all are durable.
        A state out of bounds is skipped and counted (`merges_refused`), not the batch: one
        record no replica takes must not block every other one behind it for ever."""
        for key, state in items:
            try:
                self._limits.check_state(key, state)
            except KvError:
                self._counters["merges_refused"] += 1
                continue
            self._stage_merge(key, state)
        return self._commits.durable()

    def _stage_merge(self, key: bytes | RoutedKey, incoming: KeyState) -> None:
        where = key if isinstance(key, RoutedKey) else routed(key)
        now = self._clock.monotonic()

        def change(current: KeyState | None) -> KeyState:
            if current is None:
                # Nothing here to have replaced it from (a record handed off, say): kept.
                return incoming
            merged = versions.merge(current, incoming)
            self._note_replaced(where.position, current, merged, now)
            return self._absorb_replaced(where.position, merged, now)

        self._storage.stage(where, change)

    def _note_replaced(self, position: int, before: KeyState, after: KeyState, now: float) -> None:
        """Remember the write ids of the siblings `before` had and `after` dropped: a write
        whose context covered them (its writer saw them), here or on the replica a merge
        came from, replaced them."""
        dropped = [s for s in before.siblings if s.write_id]
        if not dropped:
            return
        kept = {s.dot for s in after.siblings}
        for sibling in dropped:
            if sibling.dot not in kept:
                self._replaced_write_ids.remember(sibling.write_id, position, sibling.dot, now)

    def _absorb_replaced(self, position: int, state: KeyState, now: float) -> KeyState:
        """`state` without the twins of writes replaced here lately (issue 16).

        A write tried on two coordinators (a hedge, a retry after a timeout) may be applied
        by both: two siblings, twins, of one write. Once its writer has written the key
        again, this replica dropped the twin it held; the other twin, reaching it later (the
        slow coordinator applying the first try late, anti-entropy bringing it), would come
        back as a sibling of the newer value. It is replaced as its twin was: dropped, its
        dot kept in the clock, so merges drop it on every replica that still holds it (the
        same state a write replacing it would have left). Bounded by the memory of replaced
        ids (RecentWriteIds: 100k ids, 120 s); a twin arriving after that is kept.

        Never the remembered sibling itself (the change that dropped it may not have been
        stored: a failed commit leaves it live, and it must stay so), nor every sibling (a
        state without any is one no write leaves)."""
        replaced = self._replaced_write_ids
        stale: list[versions.Sibling] = []
        for sibling in state.siblings:
            if sibling.write_id:
                dot = replaced.dot_of(sibling.write_id, position, now)
                if dot is not None and dot != sibling.dot:
                    stale.append(sibling)
        if not stale or len(stale) == len(state.siblings):
            return state
        self._counters["write_id_twins_absorbed"] += len(stale)
        gone = {s.dot for s in stale}
        return versions.canonical_state(
            state.clock, [s for s in state.siblings if s.dot not in gone]
        )

    def purge(self, key: bytes, state: KeyState) -> bool:
        """Delete the record of `key` if it is still the tombstone `state` (tombstone GC).
        Only a tombstone: a purge naming a live value is refused, whatever it matches."""
        self._limits.check_state(key, state)
        if not state.siblings or any(not s.is_tombstone for s in state.siblings):
            raise InvalidArgument("purge removes tombstones only: the state names a live value")
        return self._storage.purge_tombstone(key, state, self._clock.wall_ms())

    def write(
        self,
        key: RoutedKey,
        context: versions.Clock,
        value: bytes | None,
        write_id: bytes = b"",
    ) -> Written:
        """The coordinated write: a new dot of this node's actor, replacing exactly what
        `context` covers, applied atomically. Refused (nothing stored) past the sibling and
        clock limits. A write whose `write_id` is already applied here, as a sibling the
        key holds, or as a dot this node made or dropped (replaced) lately that the key's
        clock covers, is not applied again: the answer is `retried`, with that dot."""
        made: list[versions.Dot] = []
        max_siblings = self._limits.max_siblings
        recent = self._recent_write_ids
        replaced = self._replaced_write_ids
        now = self._clock.monotonic()

        def apply(current: KeyState | None) -> KeyState:
            before = current or EMPTY
            if write_id:
                # A scan of the key's few siblings; a write without an id skips it.
                held = versions.written_as(before, write_id)
                if held is None:
                    # Made here lately, or a twin of it dropped here since (replaced); only
                    # from this state's history (not a purged record's, say).
                    for memory in (recent, replaced):
                        held = memory.dot_of(write_id, key.position, now)
                        if held is not None and before.clock.covers(held):
                            break
                        held = None
                if held is not None:
                    raise _AlreadyApplied(before, held)
            new, dot = versions.write(
                before, context, self.actor, value, self._clock.wall_ms(), write_id
            )
            if len(new.siblings) > max_siblings:
                raise TooManySiblings(
                    f"the write would leave {len(new.siblings)} concurrent versions; the limit"
                    f" is {max_siblings}: read the key and write with its context to resolve them"
                )
            self._limits.check_clock_growth(before, new, self.actor)
            if dot.counter > MAX_RECORD_COUNTER:
                raise StorageError(f"the key's write counter for {self.actor} is exhausted")
            self._note_replaced(key.position, before, new, now)
            made.append(dot)
            return new

        try:
            state, record = self._storage.stage(key, apply)
        except _AlreadyApplied as applied:
            self._counters["write_id_retries"] += 1
            # The record as it stands (possibly staged, not yet durable, by the first try):
            # durable with the next commit, like any staged change.
            return Written(
                applied.state,
                encode_record(applied.state),
                applied.dot,
                self._commits.durable(),
                retried=True,
            )
        if write_id:
            recent.remember(write_id, key.position, made[0], now)
        return Written(state, record, made[0], self._commits.durable())

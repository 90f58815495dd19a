"""The cluster's shared state, as gossip carries it: members and the ring they agree on.

Pure data only. Who changes what:
  * a member changes only its own `Member` record (status, heartbeat), bumping `version`;
  * the ring changes only by the claimant (`kvstore.core.ringplan`), bumping `epoch`.
Both merge by "newer wins", so gossip converges whatever order states arrive in.

Members are named by their advertised address (HOST:PORT), as Riak names nodes: the address
is what peers dial and what the ring lists. A node that comes back at another address is a
new member.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

# Bounds on what a view may carry: it arrives by gossip, so it is checked before anything of
# it is merged (`check_view`). The counters (incarnation, version, epoch) stay below 2**62,
# so adding a heartbeat or a removal's lead to one never overflows the uint64 they travel as.
MAX_MEMBER_RECORDS = 1024
MAX_COUNTER = 1 << 62
RING_DIGEST_BYTES = 16
_ADDRESS = re.compile(r"^[A-Za-z0-9._\-\[\]:]{1,250}:[0-9]{1,5}$")
_NODE_ID = re.compile(r"^[A-Za-z0-9._:-]{0,64}$")


class InvalidView(ValueError):
    """A cluster view (from gossip or disk) outside the bounds any real node keeps."""


class MemberStatus(enum.Enum):
    # Running and gossiping but owning nothing: started with seeds that do not list it, and
    # not (yet) asked to join.
    STANDBY = "standby"
    # Asked to join: the claimant gives it partitions in the next ring.
    JOINING = "joining"
    # Owns partitions (or will as soon as the pending ring is committed).
    ACTIVE = "active"
    # Asked to leave: the claimant moves its partitions away; it serves until then.
    LEAVING = "leaving"
    # Left the ring and handed off everything it held: can be stopped. Also what another
    # member writes for a dead member an operator removes (`kvstore remove`).
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class Member:
    address: str
    node_id: str
    status: MemberStatus
    # Wall-clock milliseconds of the process start, given by the runtime: a restarted member's
    # records win over those of its previous life even though its counter starts again.
    incarnation: int
    # Bumped by the member on every gossip round (its heartbeat) and every status change.
    version: int
    # The pending ring whose incoming partitions this member has finished pulling from
    # their current owners (ownership handoff): its epoch (0 when none) and digest. The
    # digest matters because two claimants can make different pending rings of one epoch.
    ready_epoch: int = 0
    ready_ring: bytes = b""
    # Where clients reach the member (its KV port): what ring-aware clients dial. Empty in
    # a record from a node that predates it.
    client_address: str = ""

    def ready_for(self, state: RingState) -> bool:
        return self.ready_epoch == state.epoch and self.ready_ring == state.digest()

    @property
    def age(self) -> tuple[int, int]:
        """Order of records about one member: the greater is the newer."""
        return (self.incarnation, self.version)


@dataclass(frozen=True, slots=True)
class RingLayout:
    """Who owns each partition: `owners[p]` indexes `members` (sorted addresses)."""

    members: tuple[str, ...]
    owners: tuple[int, ...]

    @property
    def partitions(self) -> int:
        return len(self.owners)


@dataclass(frozen=True, slots=True)
class RingState:
    """The ring every node routes by. While `pending` is set, partitions are moving to it:
    reads and writes still use `current`, writes are also copied to the pending owners."""

    epoch: int
    current: RingLayout
    pending: RingLayout | None = None

    def digest(self) -> bytes:
        """Content hash: two rings of one epoch that differ (made by two claimants during a
        partition) are ordered by it, so every node picks the same one."""
        h = hashlib.blake2b(digest_size=RING_DIGEST_BYTES)
        for layout in (self.current, self.pending):
            if layout is None:
                h.update(b"-")
                continue
            h.update(",".join(layout.members).encode())
            h.update(b";")
            h.update(bytes(str(list(layout.owners)), "ascii"))
        return h.digest()

    def newer_than(self, other: RingState) -> bool:
        return (self.epoch, self.digest()) > (other.epoch, other.digest())


def newer_member(a: Member, b: Member) -> Member:
    """The record to keep of two about the same member."""
    return b if b.age > a.age else a


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A node's knowledge of the cluster: what gossip exchanges and a restart keeps."""

    members: dict[str, Member]
    ring: RingState | None
    partitions: int
    n: int


def check_address(address: str) -> None:
    """A member's name is the HOST:PORT peers dial: nothing else is one."""
    if not _ADDRESS.match(address) or not 0 < int(address.rpartition(":")[2]) < 65536:
        raise InvalidView(f"{address[:80]!r} is not a member address (HOST:PORT)")


def _check_counter(name: str, value: int, low: int = 0) -> None:
    if not low <= value < MAX_COUNTER:
        raise InvalidView(f"{name} {value} is out of range {low}..2**62-1")


def check_member(member: Member) -> None:
    check_address(member.address)
    if not _NODE_ID.match(member.node_id):
        raise InvalidView(f"member {member.address}: node_id {member.node_id[:80]!r} is invalid")
    _check_counter("incarnation", member.incarnation)
    _check_counter("version", member.version)
    _check_counter("ready_epoch", member.ready_epoch)
    if member.ready_ring and len(member.ready_ring) != RING_DIGEST_BYTES:
        raise InvalidView(f"member {member.address}: ready_ring is not a ring digest")
    if member.client_address:
        check_address(member.client_address)


def check_view(view: ClusterView) -> None:
    """Raise InvalidView for a view no real node holds: too many members, a malformed record,
    a counter out of range, a ring whose layouts do not fit the cluster's partition count or
    name a malformed address. (Whether a ring may replace this node's is
    `ringplan.check_successor`'s question.)"""
    if len(view.members) > MAX_MEMBER_RECORDS:
        raise InvalidView(
            f"{len(view.members)} member records; a cluster holds at most {MAX_MEMBER_RECORDS}"
        )
    for address, member in view.members.items():
        if address != member.address:
            raise InvalidView("a member record is filed under another address")
        check_member(member)
    if view.ring is None:
        return
    _check_counter("ring epoch", view.ring.epoch, low=1)
    for layout in (view.ring.current, view.ring.pending):
        if layout is None:
            continue
        if layout.partitions != view.partitions:
            raise InvalidView(
                f"a ring layout has {layout.partitions} partitions, the cluster {view.partitions}"
            )
        for address in layout.members:
            check_address(address)

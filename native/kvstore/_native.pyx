# cython: language_level=3
"""kvstore's hot path in C: key hashing, the preference-list walk, quorum tracking, and the
data model of one key (dotted version vectors) with its record and context codec.

Pure functions, a small state machine and immutable value objects: no I/O. The Python side
(kvstore.core, kvstore.storage) owns the meaning and re-exports what it uses; this module
owns the speed. It imports nothing from kvstore: it is the foundation layer.

Why the data model's classes live here (Dot, Clock, Sibling, KeyState). Every request
decodes records into states, runs the DVV rules on them and encodes the result: building
and reading these objects is most of that work. As cdef classes, C code reaches their
fields directly and makes new ones without running a Python __init__ (a frozen dataclass
pays an object.__setattr__ per field). kvstore.core.versions re-exports them unchanged in
behaviour: immutable, equal and hashed by the same fields as the dataclasses they replace,
Dot ordered as the tuple (actor, counter), the same reprs. The other way to keep layers
pointing down, handing core's dataclasses to this module at import time, would keep the
Python constructors on the hot path and this module's output shaped by a caller.

The pure-Python reference of every DVV function is kvstore.core.versions_reference; the
reference codec is the protobuf path in kvstore.storage.codec. tests/property/test_native_*.py
hold the two to the same answers (and the same refusals) on random input.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem
from cpython.long cimport (
    PyLong_AsLongLong,
    PyLong_AsUnsignedLongLong,
    PyLong_FromLongLong,
    PyLong_FromUnsignedLongLong,
)
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport (
    Py_EQ,
    Py_GE,
    Py_GT,
    Py_LE,
    Py_LT,
    Py_NE,
    PyObject,
    PyObject_Hash,
    PyObject_RichCompare,
    PyObject_RichCompareBool,
)
from cpython.set cimport PySet_Contains
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Compare, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

# Targets of one request are tracked in a 64-bit mask.
MAX_TARGETS = 64
PENDING_STATE = PENDING
SUCCEEDED_STATE = SUCCEEDED
FAILED_STATE = FAILED


def hash_key(bytes key not None):
    """The key's 64-bit ring position: murmur3 x64-128, seed 0, first 64 bits."""
    cdef const unsigned char[:] view = key
    if len(key) == 0:
        return kv_murmur3_x64_h1(<const unsigned char *>b"", 0, 0)
    return kv_murmur3_x64_h1(&view[0], len(key), 0)


def partition_of(uint64_t position, int partition_bits):
    """The partition holding a ring position: the top `partition_bits` bits."""
    if partition_bits <= 0 or partition_bits > 32:
        raise ValueError("partition_bits must be in 1..32")
    return <long>(position >> (64 - partition_bits))


def preference_walk(const unsigned short[:] owners not None, int start, int members):
    """Distinct owners met walking the ring from partition `start` onwards, in order.

    owners[p] is the member index owning partition p. The first N entries of the walk are a
    key's primaries; the rest are its fallbacks in the order a sloppy quorum tries them.
    """
    cdef int q = owners.shape[0]
    cdef int i, p, m, found = 0
    cdef list walk = []
    if q == 0:
        raise ValueError("empty ring")
    if start < 0 or start >= q:
        raise ValueError("start partition out of range")
    if members <= 0 or members > 65535:
        raise ValueError("members must be in 1..65535")
    cdef bytearray seen = bytearray(members)
    for i in range(q):
        p = start + i
        if p >= q:
            p -= q
        m = owners[p]
        if m >= members:
            raise ValueError("owner index out of range")
        if not seen[m]:
            seen[m] = 1
            walk.append(m)
            found += 1
            if found == members:
                break
    # Members owning no partition (a ring smaller than the cluster) still serve as fallbacks.
    for m in range(members):
        if not seen[m]:
            walk.append(m)
    return walk


cdef class QuorumTracker:
    """Counts replica answers for one request: succeeds at `required` oks, fails as soon as
    the targets still pending cannot reach it. Each target counts once."""

    def __cinit__(self, int targets, int required):
        if targets < 1 or targets > MAX_TARGETS:
            raise ValueError(f"targets must be in 1..{MAX_TARGETS}")
        if required < 1 or required > targets:
            raise ValueError("required must be in 1..targets")
        self.targets = targets
        self.required = required
        self.ok_count = 0
        self.fail_count = 0
        self._answered = 0

    cdef int _record(self, int target, bint ok) except -1:
        cdef uint64_t bit
        if target < 0 or target >= self.targets:
            raise ValueError("target out of range")
        bit = (<uint64_t>1) << target
        if self._answered & bit:
            return self.state()
        self._answered |= bit
        if ok:
            self.ok_count += 1
        else:
            self.fail_count += 1
        return self.state()

    cpdef int ok(self, int target) except -1:
        return self._record(target, True)

    cpdef int fail(self, int target) except -1:
        return self._record(target, False)

    cpdef int state(self):
        if self.ok_count >= self.required:
            return SUCCEEDED
        if self.targets - self.fail_count < self.required:
            return FAILED
        return PENDING

    @property
    def pending(self):
        return self.targets - self.ok_count - self.fail_count

    def answered(self, int target):
        if target < 0 or target >= self.targets:
            raise ValueError("target out of range")
        return bool(self._answered & ((<uint64_t>1) << target))


# =========================================================================================
# The data model of one key: dots, clocks, siblings, states (docs/versions.md)
# =========================================================================================

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    ctypedef size_t Py_uhash_t

cdef frozenset _NO_HOLES = frozenset()
cdef object _ZERO = 0
cdef object _ONE = 1
# What an object made by __new__ alone (no __init__) holds, so that C code never meets a
# None where it reads a field. Such objects are not meant to be used; these keep them safe.
cdef dict _UNSET_VECTOR = {}
cdef bytes _NO_WRITE_ID = b""


cdef Py_hash_t _hash_pair(object first, object second) except -1:
    """hash((first, second)) without building the tuple: CPython's tuple hash (xxHash
    lanes, 3.8+), so a dot hashes as the dataclass it replaces did."""
    cdef Py_uhash_t acc, lane
    if sizeof(Py_uhash_t) != 8:
        return hash((first, second))
    acc = <Py_uhash_t>2870177450012600261ULL
    lane = <Py_uhash_t>PyObject_Hash(first)
    acc += lane * <Py_uhash_t>14029467366897019727ULL
    acc = (acc << 31) | (acc >> 33)
    acc *= <Py_uhash_t>11400714785074694791ULL
    lane = <Py_uhash_t>PyObject_Hash(second)
    acc += lane * <Py_uhash_t>14029467366897019727ULL
    acc = (acc << 31) | (acc >> 33)
    acc *= <Py_uhash_t>11400714785074694791ULL
    acc += <Py_uhash_t>2 ^ (<Py_uhash_t>2870177450012600261ULL ^ <Py_uhash_t>3527539)
    if acc == <Py_uhash_t>-1:
        return 1546275796
    return <Py_hash_t>acc


@cython.final
@cython.freelist(128)
cdef class Dot:
    """One write event: the `counter`-th write coordinated by `actor` for this key.
    Ordered, equal and hashed as the tuple (actor, counter)."""

    def __cinit__(self):
        self.actor = ""
        self.counter = _ZERO

    def __init__(self, str actor not None, counter):
        self.actor = actor
        self.counter = counter

    def __repr__(self):
        return f"{type(self).__qualname__}(actor={self.actor!r}, counter={self.counter!r})"

    def __hash__(self):
        return _hash_pair(self.actor, self.counter)

    def __richcmp__(self, other, int op):
        if type(other) is not Dot:
            return NotImplemented
        return _dot_richcmp(self, <Dot>other, op)

    def __reduce__(self):
        return (Dot, (self.actor, self.counter))


cdef inline Dot _dot(str actor, object counter):
    cdef Dot dot = Dot.__new__(Dot)
    dot.actor = actor
    dot.counter = counter
    return dot


cdef Dot _UNSET_DOT = Dot.__new__(Dot)


cdef inline bint _dot_eq(Dot a, Dot b) except -1:
    if a is b:
        return True
    return (a.actor is b.actor or a.actor == b.actor) and PyObject_RichCompareBool(
        a.counter, b.counter, Py_EQ
    )


cdef inline int _dot_lt(Dot a, Dot b) except -1:
    """(a.actor, a.counter) < (b.actor, b.counter), as the tuples compare."""
    cdef int order
    if a.actor is not b.actor:
        order = PyUnicode_Compare(a.actor, b.actor)
        if order != 0:
            return order < 0
    return PyObject_RichCompareBool(a.counter, b.counter, Py_LT)


cdef object _dot_richcmp(Dot a, Dot b, int op):
    if op == Py_EQ:
        return _dot_eq(a, b)
    if op == Py_NE:
        return not _dot_eq(a, b)
    # Tuple order: the first field that differs decides; equal dots are <= and >=.
    if not (a.actor is b.actor or a.actor == b.actor):
        return PyObject_RichCompare(a.actor, b.actor, op)
    if not PyObject_RichCompareBool(a.counter, b.counter, Py_EQ):
        return PyObject_RichCompare(a.counter, b.counter, op)
    return op == Py_LE or op == Py_GE


@cython.final
@cython.freelist(64)
cdef class Clock:
    """A set of dots: every dot its vector covers except its holes.

    Canonical form (what `make_clock` returns, and what equality relies on): no zero
    entries, every hole under its actor's entry and never at its top (such a hole folds into
    a smaller entry), so two clocks holding the same dots are equal. Not hashable (its
    vector is a dict), as the dataclass it replaces was not.
    """

    def __cinit__(self):
        self.vector = _UNSET_VECTOR
        self.holes = _NO_HOLES

    def __init__(self, vector, holes=_NO_HOLES):
        # A dict is kept as given (as the dataclass kept it); other mappings are copied.
        cdef frozenset dots = holes if type(holes) is frozenset else frozenset(holes)
        for dot in dots:
            if type(dot) is not Dot:
                raise TypeError(f"a clock's holes are Dots, not {type(dot).__name__}")
        self.vector = vector if type(vector) is dict else dict(vector)
        self.holes = dots

    def covers(self, Dot dot not None):
        """True when the write `dot` is in the set: seen by the clock's holder."""
        return _covers(self, dot)

    @property
    def entries(self):
        """Its size: vector entries plus holes (what limits bound)."""
        return len(self.vector) + len(self.holes)

    def __repr__(self):
        return f"{type(self).__qualname__}(vector={self.vector!r}, holes={self.holes!r})"

    def __hash__(self):
        return hash((self.vector, self.holes))  # TypeError: a dict is unhashable

    def __richcmp__(self, other, int op):
        if type(other) is not Clock or (op != Py_EQ and op != Py_NE):
            return NotImplemented
        return _clock_eq(self, <Clock>other) == (op == Py_EQ)

    def __reduce__(self):
        return (Clock, (self.vector, self.holes))


cdef inline Clock _clock(dict vector, frozenset holes):
    cdef Clock clock = Clock.__new__(Clock)
    clock.vector = vector
    clock.holes = holes
    return clock


cdef Clock _UNSET_CLOCK = Clock.__new__(Clock)


cdef inline bint _clock_eq(Clock a, Clock b) except -1:
    return PyObject_RichCompareBool(a.vector, b.vector, Py_EQ) and PyObject_RichCompareBool(
        a.holes, b.holes, Py_EQ
    )


cdef inline int _covers(Clock clock, Dot dot) except -1:
    """clock.vector.get(dot.actor, 0) >= dot.counter and dot not in clock.holes"""
    cdef PyObject* top = PyDict_GetItemWithError(clock.vector, dot.actor)
    cdef object entry
    if top is NULL:
        entry = _ZERO  # (a KeyError cannot be pending: GetItemWithError raised otherwise)
    else:
        entry = <object>top
    if not PyObject_RichCompareBool(entry, dot.counter, Py_GE):
        return False
    if not clock.holes:
        return True
    return not PySet_Contains(clock.holes, dot)


@cython.final
@cython.freelist(128)
cdef class Sibling:
    """One concurrent version: a value, or a tombstone when `value` is None. Equality and
    hash ignore `timestamp_ms` (wall-clock milliseconds at the creating replica: for
    display and GC, never ordering) and `write_id` (the client's id of the write that made
    it, b"" for none): both belong to the dot, which the equality compares."""

    def __cinit__(self):
        self.dot = _UNSET_DOT
        self.timestamp_ms = _ZERO
        self.write_id = _NO_WRITE_ID

    def __init__(self, Dot dot not None, value, timestamp_ms=0, bytes write_id not None=b""):
        self.dot = dot
        self.value = value
        self.timestamp_ms = timestamp_ms
        self.write_id = write_id

    @property
    def is_tombstone(self):
        return self.value is None

    def __repr__(self):
        # The write id only when there is one: a sibling without prints as it always did.
        extra = f", write_id={self.write_id!r}" if self.write_id else ""
        return (
            f"{type(self).__qualname__}(dot={self.dot!r}, value={self.value!r},"
            f" timestamp_ms={self.timestamp_ms!r}{extra})"
        )

    def __hash__(self):
        return _hash_pair(self.dot, self.value)

    def __richcmp__(self, other, int op):
        if type(other) is not Sibling or (op != Py_EQ and op != Py_NE):
            return NotImplemented
        return _sibling_eq(self, <Sibling>other) == (op == Py_EQ)

    def __reduce__(self):
        return (Sibling, (self.dot, self.value, self.timestamp_ms, self.write_id))


cdef inline Sibling _sibling(Dot dot, object value, object timestamp_ms, bytes write_id):
    cdef Sibling sibling = Sibling.__new__(Sibling)
    sibling.dot = dot
    sibling.value = value
    sibling.timestamp_ms = timestamp_ms
    sibling.write_id = write_id
    return sibling


cdef inline bint _sibling_eq(Sibling a, Sibling b) except -1:
    if a is b:
        return True
    return _dot_eq(a.dot, b.dot) and PyObject_RichCompareBool(a.value, b.value, Py_EQ)


@cython.final
@cython.freelist(64)
cdef class KeyState:
    """What one replica knows of one key. Siblings are kept sorted by dot (canonical form)
    and every sibling's dot is covered by the clock. Not hashable (its clock is not)."""

    def __cinit__(self):
        self.clock = _UNSET_CLOCK
        self.siblings = ()

    def __init__(self, Clock clock not None, siblings):
        cdef tuple items = siblings if type(siblings) is tuple else tuple(siblings)
        for item in items:
            if type(item) is not Sibling:
                raise TypeError(f"a KeyState holds Siblings, not {type(item).__name__}")
        self.clock = clock
        self.siblings = items

    @property
    def vector(self):
        return self.clock.vector

    @property
    def live_values(self):
        """The values of the live siblings, one per write id: siblings that share one are
        a single write applied by two coordinators (a retry), shown once, as its lowest dot."""
        cdef Sibling s
        cdef list values = []
        cdef set seen = None
        for s in self.siblings:
            if s.value is None:
                continue
            if PyBytes_GET_SIZE(s.write_id):
                if seen is None:
                    seen = set()
                elif PySet_Contains(seen, s.write_id):
                    continue
                seen.add(s.write_id)
            values.append(s.value)
        return values

    @property
    def found(self):
        cdef Sibling s
        for s in self.siblings:
            if s.value is not None:
                return True
        return False

    def __repr__(self):
        return f"{type(self).__qualname__}(clock={self.clock!r}, siblings={self.siblings!r})"

    def __hash__(self):
        return hash((self.clock, self.siblings))  # TypeError: a clock is unhashable

    def __richcmp__(self, other, int op):
        if type(other) is not KeyState or (op != Py_EQ and op != Py_NE):
            return NotImplemented
        return _state_eq(self, <KeyState>other) == (op == Py_EQ)

    def __reduce__(self):
        return (KeyState, (self.clock, self.siblings))


cdef inline KeyState _state(Clock clock, tuple siblings):
    cdef KeyState state = KeyState.__new__(KeyState)
    state.clock = clock
    state.siblings = siblings
    return state


cdef bint _state_eq(KeyState a, KeyState b) except -1:
    cdef Py_ssize_t i, n
    if a is b:
        return True
    if not (a.clock is b.clock or _clock_eq(a.clock, b.clock)):
        return False
    n = len(a.siblings)
    if n != len(b.siblings):
        return False
    for i in range(n):
        if not _sibling_eq(<Sibling>a.siblings[i], <Sibling>b.siblings[i]):
            return False
    return True


EMPTY_CLOCK = _clock({}, _NO_HOLES)
EMPTY = _state(EMPTY_CLOCK, ())


# ---- sorting by dot ---------------------------------------------------------------------

cdef object _by_dot = None


cdef int _sort_siblings(list siblings) except -1:
    """Sort in place by dot, stably, as sorted(siblings, key=lambda s: s.dot) does: an
    insertion sort for the few siblings a key usually has, list.sort beyond."""
    global _by_dot
    cdef Py_ssize_t n = len(siblings), i, j
    cdef Sibling item
    if n < 2:
        return 0
    if n > 16:
        if _by_dot is None:
            from operator import attrgetter

            _by_dot = attrgetter("dot")
        siblings.sort(key=_by_dot)
        return 0
    for i in range(1, n):
        item = <Sibling>siblings[i]
        j = i
        while j > 0 and _dot_lt(item.dot, (<Sibling>siblings[j - 1]).dot):
            siblings[j] = siblings[j - 1]
            j -= 1
        if j != i:
            siblings[j] = item
    return 0


cdef int _sort_dots(list dots) except -1:
    cdef Py_ssize_t n = len(dots), i, j
    cdef Dot item
    if n > 16:
        dots.sort()
        return 0
    for i in range(1, n):
        item = <Dot>dots[i]
        j = i
        while j > 0 and _dot_lt(item, <Dot>dots[j - 1]):
            dots[j] = dots[j - 1]
            j -= 1
        if j != i:
            dots[j] = item
    return 0


cdef list _sibling_list(object siblings):
    cdef list items = list(siblings)
    for item in items:
        if type(item) is not Sibling:
            raise TypeError(f"a KeyState holds Siblings, not {type(item).__name__}")
    return items


# =========================================================================================
# The rules (kvstore.core.versions documents them; versions_reference is their reference)
# =========================================================================================

cdef dict _merge_vectors(dict a, dict b):
    cdef dict merged = a.copy()
    cdef PyObject* current
    for actor, counter in b.items():
        current = PyDict_GetItemWithError(merged, actor)
        if PyObject_RichCompareBool(
            counter, _ZERO if current is NULL else <object>current, Py_GT
        ):
            merged[actor] = counter
    return merged


def merge_vectors(a, b):
    """Pointwise maximum: the least vector that has seen everything a and b have."""
    return _merge_vectors(a if type(a) is dict else dict(a), b if type(b) is dict else dict(b))


cdef Clock _make_clock(object vector, object holes, bint owned=False):
    """make_clock; `owned`: `vector` is a new dict of the caller's, which the clock may
    take over (and change) rather than copy."""
    cdef dict entries
    cdef set gaps = set()
    cdef Dot hole
    cdef PyObject* top
    cdef bint positive = True
    if type(vector) is not dict:
        vector = dict(vector)
        owned = True
    for counter in (<dict>vector).values():
        if not counter > _ZERO:
            positive = False
            break
    if positive:
        # The entries are the vector's, in its order: take it, or copy it whole (faster
        # than inserting its entries one by one).
        entries = <dict>vector if owned else (<dict>vector).copy()
    else:
        entries = {}
        for actor, counter in (<dict>vector).items():
            if counter > _ZERO:
                entries[actor] = counter
    for item in holes:
        if type(item) is not Dot:
            raise TypeError(f"a hole is a Dot, not {type(item).__name__}")
        hole = <Dot>item
        top = PyDict_GetItemWithError(entries, hole.actor)
        if _ONE <= hole.counter <= (_ZERO if top is NULL else <object>top):
            gaps.add(hole)
    if gaps:
        # A hole at the top of an entry folds into a smaller entry, repeatedly.
        for actor in {(<Dot>h).actor for h in gaps}:
            count = entries[actor]
            while True:
                hole = _dot(actor, count)
                if hole not in gaps:
                    break
                gaps.discard(hole)
                count = count - 1
            if count:
                entries[actor] = count
            else:
                del entries[actor]
    return _clock(entries, frozenset(gaps) if gaps else _NO_HOLES)


def make_clock(vector, holes=()):
    """The canonical clock of `vector` minus `holes` (holes it does not cover are moot)."""
    return _make_clock(vector, holes)


cdef Clock _join(Clock a, Clock b):
    cdef dict vector = _merge_vectors(a.vector, b.vector)
    cdef list holes
    cdef Dot hole
    if not a.holes and not b.holes:
        return _clock(vector, _NO_HOLES)
    # A hole of one side stays a hole only where the other side has not seen that dot.
    holes = []
    for hole in a.holes:
        if not _covers(b, hole):
            holes.append(hole)
    for hole in b.holes:
        if not _covers(a, hole):
            holes.append(hole)
    return _make_clock(vector, holes, True)


def join(Clock a not None, Clock b not None):
    """The union of two clocks: every dot either has seen."""
    return _join(a, b)


cdef Clock _without(Clock clock, object dots):
    cdef list extra = []
    for item in dots:
        if type(item) is not Dot:
            raise TypeError(f"a clock holds Dots, not {type(item).__name__}")
        if _covers(clock, <Dot>item):
            extra.append(item)
    if not extra:
        return clock
    return _make_clock(clock.vector, clock.holes.union(extra))


def without(Clock clock not None, dots):
    """The clock minus `dots`."""
    return _without(clock, dots)


def canonical_state(Clock clock not None, siblings):
    """A state of a canonical clock, its siblings sorted by dot."""
    cdef list items = _sibling_list(siblings)
    _sort_siblings(items)
    return _state(clock, tuple(items))


def write(KeyState state not None, Clock context not None, str actor not None, value,
          timestamp_ms=0, bytes write_id not None=b""):
    """Apply a client write at a replica whose actor id is `actor` (versions.write)."""
    cdef list kept = []
    cdef Sibling sibling
    cdef Clock known
    cdef Dot dot
    cdef PyObject* entry
    cdef set replaced_ids = None
    for sibling in state.siblings:
        if not _covers(context, sibling.dot):
            kept.append(sibling)
        elif PyBytes_GET_SIZE(sibling.write_id):
            if replaced_ids is None:
                replaced_ids = set()
            replaced_ids.add(sibling.write_id)
    if replaced_ids is not None:
        # A sibling of a write id the context replaced is that write applied again (a
        # retry's twin): the writer has seen it, whichever of the two dots it was shown.
        kept = [s for s in kept if not PySet_Contains(replaced_ids, (<Sibling>s).write_id)]
    # join() always builds a new vector: the new clock may take it over and change it.
    known = _join(state.clock, context)
    entry = PyDict_GetItemWithError(known.vector, actor)
    counter = (_ZERO if entry is NULL else <object>entry) + 1
    dot = _dot(actor, counter)
    known.vector[actor] = counter
    # Canonical as it stands: the actor's holes are all below its old entry.
    kept.append(_sibling(dot, value, timestamp_ms, write_id))
    _sort_siblings(kept)
    return _state(known, tuple(kept)), dot


def put_context(KeyState state not None, Dot dot not None):
    """The exact context of the put that made `dot`, once applied as `state`."""
    cdef list others = []
    cdef Sibling sibling
    for sibling in state.siblings:
        if not _dot_eq(sibling.dot, dot):
            others.append(sibling.dot)
    return _without(state.clock, others)


cdef bint _holds(tuple siblings, Dot dot, set dots) except -1:
    """True when `siblings` (or `dots`, their dots as a set when there are many) hold
    `dot`."""
    cdef Sibling sibling
    if dots is not None:
        return PySet_Contains(dots, dot)
    for sibling in siblings:
        if _dot_eq(sibling.dot, dot):
            return True
    return False


cdef KeyState _merge(KeyState a, KeyState b):
    cdef list kept = []
    cdef Sibling sibling
    cdef set a_dots = None, b_dots = None
    if a is b:
        return a
    # Few siblings (the usual case) are compared pairwise; many go through sets.
    if len(a.siblings) * len(b.siblings) > 64:
        a_dots = {(<Sibling>s).dot for s in a.siblings}
        b_dots = {(<Sibling>s).dot for s in b.siblings}
    for sibling in a.siblings:
        if _holds(b.siblings, sibling.dot, b_dots) or not _covers(b.clock, sibling.dot):
            kept.append(sibling)
    for sibling in b.siblings:
        if not _holds(a.siblings, sibling.dot, a_dots) and not _covers(a.clock, sibling.dot):
            kept.append(sibling)
    _sort_siblings(kept)
    return _state(_join(a.clock, b.clock), tuple(kept))


def merge(KeyState a not None, KeyState b not None):
    """Combine two replicas' states of one key (versions.merge)."""
    return _merge(a, b)


def merge_all(states):
    cdef KeyState result = EMPTY
    for state in states:
        if type(state) is not KeyState:
            raise TypeError(f"merge_all merges KeyStates, not {type(state).__name__}")
        result = _merge(result, <KeyState>state)
    return result


def is_stale(KeyState replica not None, KeyState merged not None):
    """True when a replica's state lacks something the merged state has (read repair)."""
    return not _state_eq(replica, _merge(replica, merged))


# =========================================================================================
# The record and context codec: KeyRecord and CausalContext of proto/kvstore.proto
# =========================================================================================
#
# A hand-written protobuf reader and writer for these few messages. The writer makes the
# bytes `SerializeToString(deterministic=True)` makes (fields in number order, proto3
# defaults left out); the reader takes what protobuf (upb) takes and refuses what it
# refuses: unknown fields, and known fields of another wire type, are skipped (groups
# included, nested at most as deep as upb allows); the last of a repeated scalar wins;
# strings must be UTF-8; varints are at most 10 bytes, tags at most 5 and 32 bits.
# kvstore.storage.codec keeps the protobuf path as the reference, and the tests fuzz the
# two against each other.

# Bounds on what a clock may hold (kvstore.storage.codec explains them and re-exports them).
MAX_ACTOR_BYTES = 128
# A write id is client-generated (16 random bytes by kvstore's client); longer ones are
# refused on a put and in a record.
MAX_WRITE_ID_BYTES = 64
MAX_CONTEXT_COUNTER = 2**62
MAX_RECORD_COUNTER = 2**63
RECORD_FORMAT = 1
RECORD_FORMAT_HOLES = 2
CONTEXT_FORMAT = 1
CONTEXT_FORMAT_HOLES = 2

cdef uint64_t _CONTEXT_COUNTER = 1ULL << 62
cdef uint64_t _RECORD_COUNTER = 1ULL << 63

cdef enum:
    _ACTOR_BYTES = 128
    _WRITE_ID_BYTES = 64
    # upb's nesting budget: a message may hold groups nested this deep, less one per level
    # of message it sits in (the default depth limit of 100 that Python's protobuf uses).
    _GROUP_DEPTH = 100


cdef struct _Cursor:
    const unsigned char* p
    const unsigned char* end


cdef int _corrupt(str why) except -1:
    raise ValueError(f"wire format is corrupt: {why}")


cdef inline int _varint(_Cursor* c, uint64_t* out) except -1:
    cdef uint64_t value = 0
    out[0] = 0
    cdef unsigned int shift = 0
    cdef unsigned char byte
    cdef int i
    for i in range(10):
        if c.p >= c.end:
            return _corrupt("a varint runs past the end")
        byte = c.p[0]
        c.p += 1
        value |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            out[0] = value
            return 0
        shift += 7
    return _corrupt("a varint is longer than 10 bytes")


cdef inline int _tag(_Cursor* c, uint32_t* out) except -1:
    cdef const unsigned char* start = c.p
    cdef uint64_t value = 0
    if c.p < c.end and c.p[0] < 0x80:
        out[0] = c.p[0]
        c.p += 1
        return 0
    _varint(c, &value)
    if c.p - start > 5 or value > 0xFFFFFFFFULL:
        return _corrupt("a field tag is out of range")
    out[0] = <uint32_t>value
    return 0


cdef inline uint64_t _get_fixed64(const unsigned char* p) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(7, -1, -1):  # little-endian on the wire, whatever the host
        value = (value << 8) | p[i]
    return value


cdef inline void _put_fixed64(unsigned char* p, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(8):
        p[i] = <unsigned char>(value & 0xFF)
        value >>= 8


cdef inline Py_ssize_t _size(_Cursor* c) except -1:
    cdef uint64_t value = 0
    _varint(c, &value)
    if value >= 0x7FFFFFFFULL or <Py_ssize_t>value > c.end - c.p:
        return _corrupt("a length runs past the end")
    return <Py_ssize_t>value


cdef inline int _advance(_Cursor* c, Py_ssize_t count) except -1:
    if c.end - c.p < count:
        return _corrupt("a fixed-size value runs past the end")
    c.p += count
    return 0


cdef int _skip_group(_Cursor* c, uint32_t field, int depth) except -1:
    """Skip an unknown group up to its end tag (upb's rules: field 0 is allowed inside)."""
    cdef uint32_t tag = 0, end_tag = (field << 3) | 4
    if depth == 0:
        return _corrupt("groups are nested too deep")
    while True:
        if c.p >= c.end:
            return _corrupt("a group is not closed")
        _tag(c, &tag)
        if tag == end_tag:
            return 0
        _skip_value(c, tag, depth - 1)


cdef int _skip_value(_Cursor* c, uint32_t tag, int depth) except -1:
    cdef uint32_t wire = tag & 7
    cdef uint64_t ignored = 0
    if wire == 0:
        _varint(c, &ignored)
    elif wire == 1:
        _advance(c, 8)
    elif wire == 2:
        c.p += _size(c)
    elif wire == 3:
        _skip_group(c, tag >> 3, depth)
    elif wire == 5:
        _advance(c, 4)
    else:  # an end tag with no group open, or wire types 6 and 7
        return _corrupt(f"unexpected wire type {wire}")
    return 0


cdef inline int _skip_field(_Cursor* c, uint32_t tag, int depth) except -1:
    """Skip a field a message does not know (or knows with another wire type)."""
    _skip_value(c, tag, depth)
    if tag >> 3 == 0:
        return _corrupt("field number 0")
    return 0


cdef inline str _string(_Cursor* c):
    cdef Py_ssize_t size = _size(c)
    cdef str text
    try:
        text = PyUnicode_DecodeUTF8(<char*>c.p, size, NULL)
    except UnicodeDecodeError:
        _corrupt("a string is not UTF-8")
    c.p += size
    return text


cdef inline int _sub(_Cursor* c, _Cursor* inner) except -1:
    cdef Py_ssize_t size = _size(c)
    inner.p = c.p
    inner.end = c.p + size
    c.p += size
    return 0


cdef class _Parsed:
    """A KeyRecord or CausalContext as read, before any rule is checked: the vector as the
    reference builds it (a dict, the last of a repeated actor winning; `entries` counts
    them all), the holes as a set of dots (`holes` counts them all), the siblings as
    read."""

    cdef uint32_t format
    cdef uint64_t key_position
    cdef dict vector
    cdef Py_ssize_t entries
    cdef set hole_set
    cdef Py_ssize_t holes
    cdef list siblings


cdef str _read_pair(_Cursor* c, uint64_t* counter):
    """A VectorEntry or a Dot: its actor, and its counter in `counter` (fields 1 and 2)."""
    cdef _Cursor inner
    cdef uint32_t tag = 0
    cdef str actor = ""
    _sub(c, &inner)
    counter[0] = 0
    while inner.p < inner.end:
        _tag(&inner, &tag)
        if tag == 0x0A:
            actor = _string(&inner)
        elif tag == 0x10:
            _varint(&inner, counter)
        else:
            _skip_field(&inner, tag, _GROUP_DEPTH - 1)
    return actor


cdef int _read_sibling(_Cursor* c, list siblings) except -1:
    cdef _Cursor inner
    cdef uint32_t tag = 0
    cdef uint64_t counter = 0, tombstone = 0, stamp = 0
    cdef str actor = ""
    cdef const unsigned char* value = NULL
    cdef Py_ssize_t value_size = 0, write_id_size = 0
    cdef const unsigned char* write_id = NULL
    cdef object kept
    _sub(c, &inner)
    while inner.p < inner.end:
        _tag(&inner, &tag)
        if tag == 0x0A:
            actor = _string(&inner)
        elif tag == 0x10:
            _varint(&inner, &counter)
        elif tag == 0x1A:
            value_size = _size(&inner)
            value = inner.p
            inner.p += value_size
        elif tag == 0x20:
            _varint(&inner, &tombstone)
        elif tag == 0x28:
            _varint(&inner, &stamp)
        elif tag == 0x32:
            write_id_size = _size(&inner)
            write_id = inner.p
            inner.p += write_id_size
        else:
            _skip_field(&inner, tag, _GROUP_DEPTH - 1)
    # A tombstone's value is dropped, whatever the record says (as state_from_proto does).
    if tombstone:
        kept = None
    elif value_size == 0:
        kept = b""
    else:
        kept = PyBytes_FromStringAndSize(<const char*>value, value_size)
    siblings.append(
        _sibling(
            _dot(actor, PyLong_FromUnsignedLongLong(counter)),
            kept,
            PyLong_FromLongLong(<int64_t>stamp),
            _NO_WRITE_ID
            if write_id_size == 0
            else PyBytes_FromStringAndSize(<const char*>write_id, write_id_size),
        )
    )
    return 0


cdef int _parse(object data, _Parsed parsed, bint context) except -1:
    """Read a KeyRecord (or, with `context`, a CausalContext) into `parsed`; ValueError if
    protobuf would refuse the bytes."""
    cdef _Cursor c
    cdef uint32_t tag = 0
    cdef uint64_t value = 0
    cdef str actor
    cdef bytes raw = data if type(data) is bytes else bytes(data)
    parsed.vector = {}
    parsed.siblings = [] if not context else None
    c.p = <const unsigned char*>PyBytes_AS_STRING(raw)
    c.end = c.p + PyBytes_GET_SIZE(raw)
    while c.p < c.end:
        _tag(&c, &tag)
        if tag == 0x08:
            _varint(&c, &value)
            parsed.format = <uint32_t>value
        elif tag == 0x12:
            actor = _read_pair(&c, &value)
            PyDict_SetItem(parsed.vector, actor, PyLong_FromUnsignedLongLong(value))
            parsed.entries += 1
        elif tag == 0x22:
            actor = _read_pair(&c, &value)
            if parsed.hole_set is None:
                parsed.hole_set = set()
            parsed.hole_set.add(_dot(actor, PyLong_FromUnsignedLongLong(value)))
            parsed.holes += 1
        elif tag == 0x1A and not context:
            _read_sibling(&c, parsed.siblings)
        elif tag == 0x19 and context:
            if c.end - c.p < 8:
                _corrupt("a fixed-size value runs past the end")
            parsed.key_position = _get_fixed64(c.p)
            c.p += 8
        else:
            _skip_field(&c, tag, _GROUP_DEPTH)
    return 0


cdef inline Py_ssize_t _utf8_size(str text) except -1:
    cdef Py_ssize_t size
    if PyUnicode_IS_ASCII(text):
        return PyUnicode_GET_LENGTH(text)
    PyUnicode_AsUTF8AndSize(text, &size)
    return size


cdef int _check_dot(str actor, object counter, uint64_t max_counter) except -1:
    cdef uint64_t value = PyLong_AsUnsignedLongLong(counter)
    if not actor or _utf8_size(actor) > _ACTOR_BYTES:
        raise ValueError(f"an actor id must be 1 to {MAX_ACTOR_BYTES} bytes")
    if value < 1 or value > max_counter:
        raise ValueError(f"a counter must be in 1..{max_counter}")
    return 0


cdef Clock _clock_from_entries(_Parsed parsed, uint64_t max_counter):
    """A clock as sent; ValueError unless it is in canonical form and in bounds (the rules
    of codec._clock_from_entries, checked in the same order)."""
    cdef dict vector = parsed.vector
    cdef Dot hole
    cdef PyObject* entry
    if len(vector) != parsed.entries:
        raise ValueError("an actor is named twice")
    for actor, counter in vector.items():
        _check_dot(<str>actor, counter, max_counter)
    if parsed.holes == 0:
        return _clock(vector, _NO_HOLES)
    if len(parsed.hole_set) != parsed.holes:
        raise ValueError("a hole is repeated")
    for item in parsed.hole_set:
        hole = <Dot>item
        _check_dot(hole.actor, hole.counter, max_counter)
        entry = PyDict_GetItemWithError(vector, hole.actor)
        if entry is NULL or PyObject_RichCompareBool(hole.counter, <object>entry, Py_GE):
            raise ValueError("a hole is not below its actor's entry")
    return _clock(vector, frozenset(parsed.hole_set))


def decode_record(data):
    """The state in a stored record (KeyRecord bytes, from disk or a peer: untrusted).
    ValueError on bytes protobuf refuses or a record that breaks the model's rules or
    bounds (kvstore.storage.codec turns it into StorageError)."""
    cdef _Parsed parsed = _Parsed.__new__(_Parsed)
    cdef Clock clock
    cdef list siblings
    cdef Py_ssize_t i
    cdef Sibling sibling
    _parse(data, parsed, False)
    if parsed.format != 1 and parsed.format != 2:
        raise ValueError(f"unknown record format {parsed.format}")
    if (parsed.holes > 0) != (parsed.format == 2):
        # One encoding per state: equal states must hash alike in anti-entropy.
        raise ValueError("a record has holes exactly when its format is 2")
    clock = _clock_from_entries(parsed, _RECORD_COUNTER)
    siblings = parsed.siblings
    for sibling in siblings:
        if not sibling.dot.actor or PyLong_AsUnsignedLongLong(sibling.dot.counter) < 1:
            raise ValueError("record sibling has an invalid dot")
        if not _covers(clock, sibling.dot):
            raise ValueError("record sibling's dot is not covered by its clock")
        if PyBytes_GET_SIZE(sibling.write_id) > _WRITE_ID_BYTES:
            raise ValueError(f"a sibling's write id is at most {MAX_WRITE_ID_BYTES} bytes")
    _sort_siblings(siblings)
    for i in range(1, len(siblings)):  # sorted: a repeated dot sits next to its twin
        if _dot_eq((<Sibling>siblings[i - 1]).dot, (<Sibling>siblings[i]).dot):
            raise ValueError("record has repeated dots")
    return _state(clock, tuple(siblings))


def decode_context(data, uint64_t key_position, Py_ssize_t max_entries):
    """The clock in a client's context (CausalContext bytes) for the key at
    `key_position`; empty bytes mean no context. ValueError, with the message for the
    client, on anything kvstore did not make for this key within the bounds
    (kvstore.storage.codec turns it into InvalidContext)."""
    cdef _Parsed parsed
    cdef Py_ssize_t entries
    if not data:
        return EMPTY_CLOCK
    parsed = _Parsed.__new__(_Parsed)
    try:
        _parse(data, parsed, True)
    except ValueError:
        raise ValueError("context is not a kvstore causal context") from None
    if parsed.format != 1 and parsed.format != 2:
        raise ValueError(f"unknown context format {parsed.format}")
    if parsed.key_position != key_position:
        raise ValueError("context belongs to another key: pass the context of this key")
    entries = parsed.entries + parsed.holes
    if entries > max_entries:
        raise ValueError(f"context has {entries} entries; at most {max_entries} are allowed")
    if (parsed.holes > 0) != (parsed.format == 2):
        raise ValueError("a context has holes exactly when its format is 2")
    try:
        return _clock_from_entries(parsed, _CONTEXT_COUNTER)
    except ValueError as exc:
        raise ValueError(f"context is not well formed: {exc}") from None


# ---- writing ----------------------------------------------------------------------------

cdef struct _Field:
    # One vector entry, hole or sibling as it will be written: measured first, then copied.
    const char* actor
    Py_ssize_t actor_size
    uint64_t counter
    const char* value
    Py_ssize_t value_size
    bint tombstone
    uint64_t stamp
    const char* write_id
    Py_ssize_t write_id_size
    Py_ssize_t size  # of the encoded message body


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


cdef inline unsigned char* _put_varint(unsigned char* p, uint64_t value) noexcept nogil:
    while value >= 0x80:
        p[0] = <unsigned char>(value | 0x80)
        value >>= 7
        p += 1
    p[0] = <unsigned char>value
    return p + 1


cdef int _u64(object value, uint64_t* out) except -1:
    """A uint64 field as protobuf takes it: an int in range (not a bool)."""
    if type(value) is int:
        try:
            out[0] = PyLong_AsUnsignedLongLong(value)
            return 0
        except OverflowError:
            raise ValueError(f"Value out of range: {value}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return _u64(int(value), out)


cdef int _i64(object value, uint64_t* out) except -1:
    """An int64 field, as its two's complement."""
    if type(value) is int:
        try:
            out[0] = <uint64_t>PyLong_AsLongLong(value)
            return 0
        except OverflowError:
            raise ValueError(f"Value out of range: {value}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return _i64(int(value), out)


cdef inline int _pair_field(_Field* field, object actor, object counter) except -1:
    if type(actor) is not str:
        raise TypeError(f"an actor id is a str, not {type(actor).__name__}")
    field.actor = PyUnicode_AsUTF8AndSize(actor, &field.actor_size)
    _u64(counter, &field.counter)
    field.size = 0
    if field.actor_size:
        field.size += 1 + _varint_size(field.actor_size) + field.actor_size
    if field.counter:
        field.size += 1 + _varint_size(field.counter)
    return 0


cdef inline Py_ssize_t _framed(Py_ssize_t size) noexcept nogil:
    return 1 + _varint_size(size) + size


cdef unsigned char* _put_pair(unsigned char* p, unsigned char tag, _Field* field) noexcept nogil:
    p[0] = tag
    p = _put_varint(p + 1, field.size)
    if field.actor_size:
        p[0] = 0x0A
        p = _put_varint(p + 1, field.actor_size)
        memcpy(p, field.actor, field.actor_size)
        p += field.actor_size
    if field.counter:
        p[0] = 0x10
        p = _put_varint(p + 1, field.counter)
    return p


cdef class _Fields:
    """The measured fields of one message being written (freed with it)."""

    cdef _Field* vector
    cdef _Field* holes
    cdef _Field* siblings
    cdef list keep  # the objects whose buffers the fields point into

    def __dealloc__(self):
        PyMem_Free(self.vector)
        PyMem_Free(self.holes)
        PyMem_Free(self.siblings)


cdef _Field* _alloc(Py_ssize_t count) except NULL:
    cdef _Field* fields = <_Field*>PyMem_Malloc(max(count, 1) * sizeof(_Field))
    if fields is NULL:
        raise MemoryError()
    return fields


cdef Py_ssize_t _measure_clock(Clock clock, _Fields fields, list actors, list holes) except -1:
    """Fill the vector and hole fields (sorted) and return their encoded size."""
    cdef Py_ssize_t i, total = 0
    cdef Dot hole
    actors.extend(clock.vector)
    actors.sort()
    fields.vector = _alloc(len(actors))
    for i in range(len(actors)):
        _pair_field(&fields.vector[i], actors[i], clock.vector[actors[i]])
        total += _framed(fields.vector[i].size)
    if clock.holes:
        holes.extend(clock.holes)
        _sort_dots(holes)
        fields.holes = _alloc(len(holes))
        for i in range(len(holes)):
            hole = <Dot>holes[i]
            _pair_field(&fields.holes[i], hole.actor, hole.counter)
            total += _framed(fields.holes[i].size)
    return total


def encode_record(KeyState state not None):
    """The KeyRecord bytes of a state: byte for byte what
    state_to_proto(state).SerializeToString(deterministic=True) makes."""
    cdef Clock clock = state.clock
    cdef _Fields fields = _Fields.__new__(_Fields)
    cdef list actors = [], holes = []
    cdef tuple siblings = state.siblings
    cdef Py_ssize_t i, n = len(siblings), total
    cdef Sibling sibling
    cdef _Field* field
    cdef bytes out
    cdef unsigned char* p
    fields.keep = []
    total = 2 + _measure_clock(clock, fields, actors, holes)  # format is 1 or 2: 2 bytes
    fields.siblings = _alloc(n)
    for i in range(n):
        sibling = <Sibling>siblings[i]
        field = &fields.siblings[i]
        _pair_field(field, sibling.dot.actor, sibling.dot.counter)
        value = sibling.value or b""
        if type(value) is not bytes:
            raise TypeError(f"a value is bytes, not {type(value).__name__}")
        fields.keep.append(value)
        field.value = PyBytes_AS_STRING(value)
        field.value_size = PyBytes_GET_SIZE(value)
        field.tombstone = sibling.value is None
        _i64(sibling.timestamp_ms, &field.stamp)
        if field.value_size:
            field.size += _framed(field.value_size)
        if field.tombstone:
            field.size += 2
        if field.stamp:
            field.size += 1 + _varint_size(field.stamp)
        # (The sibling holds its write id, and the state its siblings, while this runs.)
        field.write_id_size = PyBytes_GET_SIZE(sibling.write_id)
        if field.write_id_size:
            field.write_id = PyBytes_AS_STRING(sibling.write_id)
            field.size += _framed(field.write_id_size)
        total += _framed(field.size)
    out = PyBytes_FromStringAndSize(NULL, total)
    p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = 0x08
    p[1] = 2 if clock.holes else 1
    p += 2
    for i in range(len(actors)):
        p = _put_pair(p, 0x12, &fields.vector[i])
    for i in range(n):
        field = &fields.siblings[i]
        p = _put_pair(p, 0x1A, field)
        if field.value_size:
            p[0] = 0x1A
            p = _put_varint(p + 1, field.value_size)
            memcpy(p, field.value, field.value_size)
            p += field.value_size
        if field.tombstone:
            p[0] = 0x20
            p[1] = 0x01
            p += 2
        if field.stamp:
            p[0] = 0x28
            p = _put_varint(p + 1, field.stamp)
        if field.write_id_size:
            p[0] = 0x32
            p = _put_varint(p + 1, field.write_id_size)
            memcpy(p, field.write_id, field.write_id_size)
            p += field.write_id_size
    for i in range(len(holes)):
        p = _put_pair(p, 0x22, &fields.holes[i])
    return out


def encode_context(Clock clock not None, key_position):
    """The CausalContext bytes of a clock for the key at `key_position`; empty bytes when
    it covers nothing. Byte for byte what the protobuf path makes."""
    cdef _Fields fields
    cdef list actors = [], holes = []
    cdef Py_ssize_t i, total
    cdef uint64_t position
    cdef bytes out
    cdef unsigned char* p
    if not clock.vector:
        return b""
    _u64(key_position, &position)
    fields = _Fields.__new__(_Fields)
    total = 2 + _measure_clock(clock, fields, actors, holes)
    if position:
        total += 9
    out = PyBytes_FromStringAndSize(NULL, total)
    p = <unsigned char*>PyBytes_AS_STRING(out)
    p[0] = 0x08
    p[1] = 2 if clock.holes else 1
    p += 2
    for i in range(len(actors)):
        p = _put_pair(p, 0x12, &fields.vector[i])
    if position:
        p[0] = 0x19
        _put_fixed64(p + 1, position)
        p += 9
    for i in range(len(holes)):
        p = _put_pair(p, 0x22, &fields.holes[i])
    return out

# cython: language_level=3
"""kvstore's hot path in C: key hashing, the preference-list walk, quorum tracking, and the
data model of one key (dotted version vectors).

Pure functions, a small state machine and immutable value objects: no I/O. The Python side
(kvstore.core) owns the meaning and re-exports what it uses; this module
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

The pure-Python reference of every DVV function is kvstore.core.versions_reference;
tests/unit/test_native_versions.py holds the two to the same answers on random input.
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

    def __init__(self, vector, holes=_NO_HOLES):
        # A dict is kept as given (as the dataclass kept it); other mappings are copied.
        self.vector = vector if type(vector) is dict else dict(vector)
        self.holes = holes if type(holes) is frozenset else frozenset(holes)

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
    display and GC, never ordering)."""

    def __init__(self, Dot dot not None, value, timestamp_ms=0):
        self.dot = dot
        self.value = value
        self.timestamp_ms = timestamp_ms

    @property
    def is_tombstone(self):
        return self.value is None

    def __repr__(self):
        return (
            f"{type(self).__qualname__}(dot={self.dot!r}, value={self.value!r},"
            f" timestamp_ms={self.timestamp_ms!r})"
        )

    def __hash__(self):
        return _hash_pair(self.dot, self.value)

    def __richcmp__(self, other, int op):
        if type(other) is not Sibling or (op != Py_EQ and op != Py_NE):
            return NotImplemented
        return _sibling_eq(self, <Sibling>other) == (op == Py_EQ)

    def __reduce__(self):
        return (Sibling, (self.dot, self.value, self.timestamp_ms))


cdef inline Sibling _sibling(Dot dot, object value, object timestamp_ms):
    cdef Sibling sibling = Sibling.__new__(Sibling)
    sibling.dot = dot
    sibling.value = value
    sibling.timestamp_ms = timestamp_ms
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
        cdef Sibling s
        return [s.value for s in self.siblings if s.value is not None]

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


cdef Clock _make_clock(object vector, object holes):
    cdef dict entries = {}
    cdef set gaps = set()
    cdef Dot hole
    cdef PyObject* top
    if type(vector) is not dict:
        vector = dict(vector)
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
    return _make_clock(vector, holes)


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
          timestamp_ms=0):
    """Apply a client write at a replica whose actor id is `actor` (versions.write)."""
    cdef list kept = []
    cdef Sibling sibling
    cdef Clock known
    cdef Dot dot
    cdef PyObject* entry
    for sibling in state.siblings:
        if not _covers(context, sibling.dot):
            kept.append(sibling)
    # join() always builds a new vector: the new clock may take it over and change it.
    known = _join(state.clock, context)
    entry = PyDict_GetItemWithError(known.vector, actor)
    counter = (_ZERO if entry is NULL else <object>entry) + 1
    dot = _dot(actor, counter)
    known.vector[actor] = counter
    # Canonical as it stands: the actor's holes are all below its old entry.
    kept.append(_sibling(dot, value, timestamp_ms))
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


# The contract of kvstore._native: what the Cython core offers the Python layers above it.
from libc.stdint cimport uint64_t

cdef extern from "murmur3.h":
    uint64_t kv_murmur3_x64_h1(const unsigned char *data, size_t len, unsigned int seed) nogil

# Outcome of a quorum: still waiting, reached, or no longer reachable.
cdef enum QuorumState:
    PENDING = 0
    SUCCEEDED = 1
    FAILED = 2

cdef class QuorumTracker:
    cdef readonly int targets
    cdef readonly int required
    cdef readonly int ok_count
    cdef readonly int fail_count
    cdef uint64_t _answered
    cdef int _record(self, int target, bint ok) except -1
    cpdef int ok(self, int target) except -1
    cpdef int fail(self, int target) except -1
    cpdef int state(self)

# ---- the data model of one key (dotted version vectors; kvstore.core.versions) ----
# Immutable value objects: every attribute is readonly from Python, and the functions of
# the module build new ones rather than change them. Declared here so that other Cython
# code can cimport them and reach their fields in C.

cdef class Dot:
    cdef readonly str actor
    cdef readonly object counter  # a Python int: a stored counter may reach 2**63 + 1

cdef class Clock:
    cdef readonly dict vector  # actor -> counter, no zero entries in canonical form
    cdef readonly frozenset holes  # dots under the vector this clock has not seen

cdef class Sibling:
    cdef readonly Dot dot
    cdef readonly object value  # bytes, or None for a tombstone
    cdef readonly object timestamp_ms
    cdef readonly bytes write_id  # the client's id of the write that made it; b"": none

cdef class KeyState:
    cdef readonly Clock clock
    cdef readonly tuple siblings  # of Sibling, sorted by dot in canonical form

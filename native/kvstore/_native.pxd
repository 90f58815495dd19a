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

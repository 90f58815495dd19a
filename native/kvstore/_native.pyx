# cython: language_level=3
"""kvstore's hot path in C: key hashing, the preference-list walk, quorum tracking.

Pure functions and a small state machine: no I/O, no Python objects kept beyond arguments.
The Python side (kvstore.core) owns the meaning; this module owns the speed.
"""

from libc.stdint cimport uint64_t

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

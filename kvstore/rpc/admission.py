"""A node-wide bound on the client requests it coordinates at once.

Without one, a burst (2,000 concurrent requests, or a dozen puts of 30 MiB) queued without
limit: memory grew with it and requests waited out their deadlines in the queue. Past the
bound a request is refused at once with Overloaded (RESOURCE_EXHAUSTED) and a retry hint,
before anything was done, so retrying it (later, or on another node) is always safe.

A batch counts one per item. Bytes are the request's encoded size. Replica calls between
nodes are not counted here (a coordinator holding a client slot while it waits for its
replicas must never be refused by them); each peer stream has its own bound
(kvstore.rpc.session).
"""

from __future__ import annotations

from collections import Counter

from kvstore.errors import Overloaded

# Bounds of the retry hint: a refused client should come back soon, but not spin.
_MIN_RETRY_MS = 5
_MAX_RETRY_MS = 1_000


class Admission:
    def __init__(self, max_requests: int, max_bytes: int, counters: Counter[str]) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._counters = counters
        # A smoothed request duration (ms): how long until a slot is likely free.
        self._duration_ms = 10.0

    def enter(self, items: int, size: int) -> None:
        """Take room for a request of `items` items and `size` bytes, or raise Overloaded.
        A request alone may always run, however large (the frame limit and max_batch_items
        bound it), so a bound set low never refuses everything."""
        busy = self.requests > 0
        if busy and (
            self.requests + items > self.max_requests or self.bytes + size > self.max_bytes
        ):
            self._counters["requests_refused_overloaded"] += 1
            retry = int(min(max(self._duration_ms, _MIN_RETRY_MS), _MAX_RETRY_MS))
            raise Overloaded(
                f"the node is coordinating {self.requests} requests ({self.bytes} bytes);"
                f" its bound is {self.max_requests} (max_inflight_requests) and"
                f" {self.max_bytes} bytes (max_inflight_request_bytes): retry in about"
                f" {retry} ms or on another node",
                retry,
            )
        self.requests += items
        self.bytes += size

    def leave(self, items: int, size: int, duration_ms: float) -> None:
        self.requests -= items
        self.bytes -= size
        self._duration_ms += (duration_ms - self._duration_ms) * 0.1

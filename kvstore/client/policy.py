"""How a client retries, hedges and holds nodes suspect: small immutable policy objects,
given to a Client or AsyncClient (`retry=`, `hedge=`, `breaker=`) and shared by its calls."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvstore.errors import InvalidOption


def _check(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidOption(f"{name} must be in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Tries of one call after a failure another node may not share (the node could not be
    reached, timed out, was overloaded or lacked replicas): at most `attempts` tries in all,
    the first included, waiting `backoff_s * 2**k` (at most `max_backoff_s`) before retry k,
    of which a random share `jitter` (0: none, 1: full jitter) so clients that failed
    together do not retry together. Reads are retried after any such failure. A write is
    retried after a failure that leaves it nowhere: its try never left, or the node refused it
    untouched (Overloaded, Draining, Stalled, StorageUnavailable). After a failure that may
    have left it stored (Unavailable: fewer than w replicas answered; a timeout; a lost
    connection) it is retried only with `ambiguous_writes=True`: its write id makes a node
    that holds it answer the retry without applying it again, but a node that does not hold
    it makes it a second time, and a writer who writes the key again with the context it got
    then replaces one of the two. Errors of the request itself (InvalidArgument,
    PermissionDenied, ...) are never retried. Every try stays within the call's timeout."""

    attempts: int = 3
    backoff_s: float = 0.01
    max_backoff_s: float = 1.0
    jitter: float = 0.5
    ambiguous_writes: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidOption(f"attempts must be an integer, got {self.attempts!r}")
        _check("attempts", self.attempts, 1, 20)
        _check("backoff_s", self.backoff_s, 0, 60)
        _check("max_backoff_s", self.max_backoff_s, 0, 600)
        _check("jitter", self.jitter, 0, 1)

    @classmethod
    def never(cls) -> RetryPolicy:
        """One try: a failure is raised as it is."""
        return cls(attempts=1)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry)."""
        full = min(self.max_backoff_s, self.backoff_s * (1 << min(max(retry - 1, 0), 30)))
        return full * (1 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """A second try of a call that is slow, on the next node, without giving up the first:
    the first answer wins (cassandra-driver's speculative execution). A read is hedged once it
    has waited the `read_percentile` of recent read latencies. A write that has waited
    `write_factor` times the `write_percentile` of recent writes is hedged only if its node
    does not answer its health check within twice that delay (at least 50 ms, at most
    `write_probe_s`), as a stopped or frozen node does not: the stall
    fence stops such a node applying the write when it wakes, and replicas drop a late twin
    of a write they replaced. A node that answers is left to finish the write (a partition
    behind it, a slow disk): a second coordinator on the other side of a partition would make
    a twin of the write that the writer's next put, chained from the answer of one, cannot
    replace on that side (kvchaos's split and isolate scenarios found it). `writes=False`:
    writes are never hedged. Delays stay within [min_delay_s, max_delay_s];
    `initial_delay_s` serves until `min_samples` latencies are known. At most `max_share`
    of a client's calls are hedged, `max_burst` at once: a busy cluster is slow for every
    call, and hedging them all would only add to its load (the hedges past the budget are
    counted in ClientStats.hedges_over_budget)."""

    reads: bool = True
    writes: bool = True
    read_percentile: float = 0.95
    write_percentile: float = 0.99
    write_factor: float = 2.0
    min_delay_s: float = 0.002
    max_delay_s: float = 1.0
    initial_delay_s: float = 0.1
    min_samples: int = 50
    max_share: float = 0.1
    max_burst: int = 10
    write_probe_s: float = 0.25

    def __post_init__(self) -> None:
        _check("read_percentile", self.read_percentile, 0.5, 1)
        _check("write_percentile", self.write_percentile, 0.5, 1)
        _check("write_factor", self.write_factor, 1, 100)
        _check("min_delay_s", self.min_delay_s, 0, 60)
        _check("max_delay_s", self.max_delay_s, self.min_delay_s, 60)
        _check("initial_delay_s", self.initial_delay_s, 0, 60)
        _check("min_samples", self.min_samples, 1, 100_000)
        _check("max_share", self.max_share, 0, 1)
        _check("max_burst", self.max_burst, 1, 100_000)
        _check("write_probe_s", self.write_probe_s, 0.001, 60)

    @classmethod
    def never(cls) -> HedgePolicy:
        return cls(reads=False, writes=False)


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a node is held suspect and skipped: at once when a try of it fails or times out,
    or after `slow_limit` tries in a row that were hedged because it was slow. It is skipped
    for `open_s`, doubled for each further failure in a row up to `max_open_s` (with
    +-`jitter` of it at random); then one call probes it (half-open): a success closes the
    breaker, a failure opens it again for longer. A node skipped this way is still tried when
    every node of a call is."""

    open_s: float = 0.5
    max_open_s: float = 30.0
    slow_limit: int = 3
    jitter: float = 0.2

    def __post_init__(self) -> None:
        _check("open_s", self.open_s, 0.001, 600)
        _check("max_open_s", self.max_open_s, self.open_s, 3600)
        _check("slow_limit", self.slow_limit, 1, 1000)
        _check("jitter", self.jitter, 0, 1)

"""Workloads: client processes (threads) that run operations and record every one.

Each process talks to one node only (as Jepsen binds a client to a node), so under a partition
there are writers on every side. Values are unique per run (`p<process>-<seq>`), which is what
lets the checker tell which write a value came from. Names (`--workload`, comma separated;
processes are dealt out to them in turn):

- unique  every write goes to a new key, once: many keys, no contexts
- hot     every process reads then writes the same few keys, passing what it read (joined
          with its own last write's context): concurrent writers, siblings, replacement
- ryw     read-your-writes: each process writes its own keys and reads each write back at
          once; the checker reports how often a read missed it (stale reads)
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from kvstore.chaos.backend import choose
from kvstore.chaos.history import History, Op, Outcome, Vector
from kvstore.client import Client
from kvstore.core.versions import merge_vectors
from kvstore.errors import InvalidArgument, KvError, TooManySiblings
from kvstore.storage.codec import decode_context, encode_context

HOT_KEYS = 3
RYW_KEYS = 4
# A process whose node is down fails fast; this pause keeps it from spinning.
FAILURE_PAUSE_S = 0.05


def _outcome(error: KvError) -> Outcome:
    # Only a refusal before anything was stored is a definite failure (a bad argument, or a
    # write that would exceed max_siblings, refused before it is applied); a write that
    # timed out or reached fewer than W replicas may still have landed somewhere.
    return "fail" if isinstance(error, InvalidArgument | TooManySiblings) else "unknown"


class Process:
    """One client thread's view: its node, its client, and the history it records into."""

    def __init__(
        self,
        process: int,
        node: str,
        client: Client,
        history: History,
        rng: random.Random,
        run_id: str = "",
    ) -> None:
        # Keys and values carry the run's id: runs against one cluster never share a key.
        self.prefix = f"{run_id}-" if run_id else ""
        self.process = process
        self.node = node
        self.client = client
        self.history = history
        self.rng = rng
        self.seq = 0
        # Set when the process stopped on an error of the harness (not of the store).
        self.failure = ""

    def next_value(self) -> str:
        self.seq += 1
        return f"{self.prefix}p{self.process}-{self.seq}"

    def write(self, key: str, context: Vector | None = None) -> Op:
        value = self.next_value()
        sent = context or {}
        start = self.history.now()
        try:
            result = self.client.put(
                key, value.encode(), context=encode_context(sent, key.encode()) or None
            )
            op = Op(self.process, "write", key, self.node, start, self.history.now(), "ok",
                    value=value, sent=sent,
                    returned=decode_context(result.context, key.encode()))  # fmt: skip
        except KvError as exc:
            op = Op(self.process, "write", key, self.node, start, self.history.now(),
                    _outcome(exc), value=value, sent=sent, error=str(exc)[:200])  # fmt: skip
        self.history.record(op)
        return op

    def read(self, key: str) -> Op:
        start = self.history.now()
        try:
            result = self.client.get(key)
            op = Op(self.process, "read", key, self.node, start, self.history.now(), "ok",
                    values=tuple(sorted(v.decode() for v in result.values)),
                    returned=decode_context(result.context, key.encode()))  # fmt: skip
        except KvError as exc:
            op = Op(self.process, "read", key, self.node, start, self.history.now(),
                    _outcome(exc), error=str(exc)[:200])  # fmt: skip
        self.history.record(op)
        return op


class Workload(ABC):
    name: str

    @abstractmethod
    def step(self, p: Process) -> bool:
        """Run one operation (or one read-then-write pair); False if every op failed."""


class Unique(Workload):
    name = "unique"

    def step(self, p: Process) -> bool:
        return p.write(f"{p.prefix}u{p.process}-{p.seq + 1}").outcome == "ok"


class Hot(Workload):
    name = "hot"

    def __init__(self) -> None:
        self._mine: dict[tuple[int, str], Vector] = {}

    def step(self, p: Process) -> bool:
        key = f"{p.prefix}hot-{p.rng.randrange(HOT_KEYS)}"
        read = p.read(key)
        # Join what it read with its own last write: the new write replaces both, so a
        # process never leaves more than one sibling of its own behind.
        context = merge_vectors(read.returned, self._mine.get((p.process, key), {}))
        write = p.write(key, context)
        if write.outcome == "ok":
            self._mine[(p.process, key)] = write.returned
        return write.outcome == "ok" or read.outcome == "ok"


class ReadYourWrites(Workload):
    name = "ryw"

    def __init__(self) -> None:
        self._mine: dict[str, Vector] = {}

    def step(self, p: Process) -> bool:
        key = f"{p.prefix}ryw-{p.process}-{p.rng.randrange(RYW_KEYS)}"
        write = p.write(key, self._mine.get(key))
        if write.outcome != "ok":
            return False
        self._mine[key] = write.returned
        return p.read(key).outcome == "ok"


WORKLOADS: dict[str, Callable[[], Workload]] = {
    cls.name: cls for cls in (Unique, Hot, ReadYourWrites)
}


def make_workloads(names: str | Sequence[str]) -> list[Workload]:
    return choose(names, WORKLOADS, "workload")


def run_process(
    workload: Workload,
    p: Process,
    stop: threading.Event,
    rate_per_s: float,
    max_ops: int,
) -> None:
    """Steps until `stop` or `max_ops` (bounded both ways), at most `rate_per_s` steps/s."""
    interval = 1.0 / rate_per_s
    next_at = time.monotonic()
    for _ in range(max_ops):
        if stop.is_set():
            return
        try:
            ok = workload.step(p)
        except Exception as exc:
            p.failure = f"{type(exc).__name__}: {exc}"
            return
        next_at = max(next_at + interval, time.monotonic() + (0 if ok else FAILURE_PAUSE_S))
        stop.wait(max(0.0, next_at - time.monotonic()))

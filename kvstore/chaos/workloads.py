"""Workloads: client processes (threads) that run operations and record every one.

Each process talks to one node only (as Jepsen binds a client to a node), so under a partition
there are writers on every side. Values are unique per run (`p<process>-<seq>`), which is what
lets the checker tell which write a value came from. Processes carry the store's contexts as
the opaque bytes they are; the history keeps them only as text for people.

A process's write of a key carries everything it has been shown of the key: the join of the
contexts of its acknowledged reads and puts (each exact, so the join covers only what it was
shown). The checker relies on this: it credits a write by a process that had been shown a
value as replacing that value, which is only sound if the write's context covers it.

Names (`--workload`, comma separated; processes are dealt out to them in turn):

- unique  every write goes to a new key, once: many keys, no contexts
- hot     every process reads then writes the same few keys: concurrent writers, siblings,
          replacement; about half its puts ask for return_body (whose context covers the
          values it was then shown)
- ryw     read-your-writes: each process writes its own keys and reads each write back at
          once; the checker reports how often a read missed it (stale reads)
- chain   every process writes the same few keys and never reads them, so each write
          carries only what its own puts returned (half of them with return_body). A put
          context that covered concurrent writes its writer was never shown would drop them
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from kvstore.chaos.backend import choose
from kvstore.chaos.history import History, Op, Outcome
from kvstore.client import Client, GetResult, PutResult
from kvstore.core.versions import join
from kvstore.errors import InvalidArgument, InvalidContext, KvError, TooManySiblings
from kvstore.storage.codec import decode_context, describe_clock, encode_context

HOT_KEYS = 3
RYW_KEYS = 4
CHAIN_KEYS = 3
# A process whose node is down fails fast; this pause keeps it from spinning.
FAILURE_PAUSE_S = 0.05
# The share of the hot and chain workloads' puts made with return_body.
RETURN_BODY_SHARE = 0.5


def _outcome(error: KvError) -> Outcome:
    # Only a refusal before anything was stored is a definite failure (a bad argument, or a
    # write that would exceed max_siblings, refused before it is applied); a write that
    # timed out or reached fewer than W replicas may still have landed somewhere.
    return "fail" if isinstance(error, InvalidArgument | TooManySiblings) else "unknown"


def describe_context(context: bytes | None, key: str) -> str:
    """A context as text for the history ("" for none); never raises (a context the store
    gave back that does not decode is shown as such, for people to see)."""
    try:
        return describe_clock(decode_context(context or b"", key.encode()))
    except InvalidContext as exc:
        return f"<undecodable context of {len(context or b'')} bytes: {exc}>"


def _texts(values: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(sorted(v.decode() for v in values))


def join_contexts(a: bytes, b: bytes, key: str) -> bytes:
    """The context covering what either covers (each exact: what its holder was shown)."""
    k = key.encode()
    return encode_context(join(decode_context(a, k), decode_context(b, k)), k)


class Process:
    """One client thread's view: its node, its client, the history it records into, and
    what it has been shown of each key (the join of its acknowledged reads' and puts'
    contexts), which its next write of the key carries."""

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
        self._shown: dict[str, bytes] = {}
        # Set when the process stopped on an error of the harness (not of the store).
        self.failure = ""

    def next_value(self) -> str:
        self.seq += 1
        return f"{self.prefix}p{self.process}-{self.seq}"

    def context(self, key: str) -> bytes | None:
        """What the next write of `key` carries: all this process was shown of it."""
        return self._shown.get(key)

    def _learn(self, key: str, context: bytes) -> None:
        known = self._shown.get(key)
        self._shown[key] = join_contexts(known, context, key) if known else context

    def write(self, key: str, return_body: bool = False) -> tuple[Op, PutResult | None]:
        """Put a fresh value with the key's context; the op recorded, and the store's answer
        when it was ok (a write of unknown outcome teaches the process nothing)."""
        value = self.next_value()
        context = self.context(key)
        sent = describe_context(context, key)
        start = self.history.now()
        result: PutResult | None = None
        try:
            result = self.client.put(key, value.encode(), context=context, return_body=return_body)
        except KvError as exc:
            op = Op(self.process, "write", key, self.node, start, self.history.now(),
                    _outcome(exc), value=value, sent=sent, error=str(exc)[:200])  # fmt: skip
        else:
            op = Op(self.process, "write", key, self.node, start, self.history.now(), "ok",
                    value=value, values=_texts(result.values), sent=sent,
                    returned=describe_context(result.context, key))  # fmt: skip
            self._learn(key, result.context)
        self.history.record(op)
        return op, result

    def read(self, key: str) -> tuple[Op, GetResult | None]:
        """Get the key; the op recorded, and the store's answer when it was ok."""
        start = self.history.now()
        result: GetResult | None = None
        try:
            result = self.client.get(key)
        except KvError as exc:
            op = Op(self.process, "read", key, self.node, start, self.history.now(),
                    _outcome(exc), error=str(exc)[:200])  # fmt: skip
        else:
            op = Op(self.process, "read", key, self.node, start, self.history.now(), "ok",
                    values=_texts(result.values),
                    returned=describe_context(result.context, key))  # fmt: skip
            if result.context:
                self._learn(key, result.context)
        self.history.record(op)
        return op, result


class Workload(ABC):
    name: str

    @abstractmethod
    def step(self, p: Process) -> bool:
        """Run one operation (or one read-then-write pair); False if every op failed."""


class Unique(Workload):
    name = "unique"

    def step(self, p: Process) -> bool:
        op, _ = p.write(f"{p.prefix}u{p.process}-{p.seq + 1}")
        return op.outcome == "ok"


class Hot(Workload):
    name = "hot"

    def step(self, p: Process) -> bool:
        key = f"{p.prefix}hot-{p.rng.randrange(HOT_KEYS)}"
        read, _ = p.read(key)
        # What it read joined with its own earlier puts: the write replaces both (its own
        # last write among them), so a process never leaves more than one sibling of its
        # own behind. With return_body the context returned covers the siblings shown.
        write, _ = p.write(key, return_body=p.rng.random() < RETURN_BODY_SHARE)
        return write.outcome == "ok" or read.outcome == "ok"


class ReadYourWrites(Workload):
    name = "ryw"

    def step(self, p: Process) -> bool:
        key = f"{p.prefix}ryw-{p.process}-{p.rng.randrange(RYW_KEYS)}"
        write, _ = p.write(key)
        if write.outcome != "ok":
            return False
        read, _ = p.read(key)
        return read.outcome == "ok"


class Chain(Workload):
    name = "chain"

    def step(self, p: Process) -> bool:
        key = f"{p.prefix}chain-{p.rng.randrange(CHAIN_KEYS)}"
        write, _ = p.write(key, return_body=p.rng.random() < RETURN_BODY_SHARE)
        return write.outcome == "ok"


WORKLOADS: dict[str, Callable[[], Workload]] = {
    cls.name: cls for cls in (Unique, Hot, ReadYourWrites, Chain)
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

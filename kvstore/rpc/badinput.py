"""Logging what callers send without letting them write the log.

Every line a request makes the node log is a line an anonymous caller can make it write: 600
garbage calls once made 4,200 lines of tracebacks (grpc's own "Unexpected [DecodeError] raised
by servicer method" with 6 lines of traceback each), enough to fill a disk or bury the line an
operator needs. So each kind of failure (which method, which exception type) logs at most one
line per interval, and that line says how many like it were not logged since the previous one:

* bad input (a request that cannot be decoded): one line, never a traceback, as it says
  nothing about kvstore's code;
* an internal error (a bug: a servicer raised something other than a KvError): the
  traceback, as it is needed to fix the bug, but likewise once per interval per kind.

`install_grpc_filter` applies this to grpc's own loggers (the node calls it where it starts);
`internal_error` is what the servicers log a bug through.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

# One line per kind per this many seconds.
DEFAULT_INTERVAL_S = 10.0
# Kinds remembered at once: a kind is (where, exception type), both bounded in practice, but
# the bound must not depend on what callers send. Past it, new kinds share one kind.
MAX_KINDS = 512
_OVERFLOW: tuple[str] = ("(other kinds)",)
# A caller's bytes can end up in an exception's message: this much of it is logged.
MAX_DETAIL_CHARS = 200

# The loggers grpc reports a servicer's (or a request's decoding) failure through: the asyncio
# server's (Cython), the thread-pool server's, and the shared deserialization helper's.
GRPC_LOGGERS = ("grpc._cython.cygrpc", "grpc._server", "grpc._common")
# Exception types that mean "the caller sent bytes that are not the request" (protobuf's
# DecodeError, named rather than imported: which protobuf backend raises it varies).
BAD_INPUT_TYPES = frozenset({"DecodeError"})


@dataclass
class _Window:
    opened: float  # when this kind's last line was written
    suppressed: int = 0  # lines of this kind not written since


class LogLimiter:
    """Per kind, at most one line per `interval_s`; counts what it holds back. Thread-safe:
    grpc may log from its own threads."""

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = MAX_KINDS,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._max_kinds = max(1, max_kinds)
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, kind: Hashable) -> int | None:
        """None: do not log this one (it is counted). A number: log it now, saying that many
        of its kind were not logged since its kind's previous line."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None:
                kind = self._room_for(kind, now)
                window = self._windows.get(kind)
                if window is None:
                    self._windows[kind] = _Window(now)
                    return 0
            if now - window.opened < self.interval_s:
                window.suppressed += 1
                return None
            suppressed = window.suppressed
            window.opened, window.suppressed = now, 0
            return suppressed

    def _room_for(self, kind: Hashable, now: float) -> Hashable:
        """The kind to count under: `kind` itself while there is room, after forgetting the
        kinds whose interval is over and that hold nothing back; else the shared overflow."""
        if len(self._windows) < self._max_kinds:
            return kind
        idle = [
            k
            for k, w in self._windows.items()
            if not w.suppressed and now - w.opened >= self.interval_s and k != _OVERFLOW
        ]
        for k in idle:
            del self._windows[k]
        if len(self._windows) < self._max_kinds:
            return kind
        if _OVERFLOW not in self._windows:
            # Make room for the overflow kind itself: drop the oldest window.
            oldest = min(self._windows, key=lambda k: self._windows[k].opened)
            del self._windows[oldest]
        return _OVERFLOW


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """A caller-shaped text as one log line of bounded length."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _held_back(suppressed: int) -> str:
    return f" ({suppressed} more like it not logged since its last line)" if suppressed else ""


# grpc names the method in its message: "... raised by servicer method [/pkg.Service/Method]".
_METHOD = re.compile(r"\[(/[\w.]+/\w+)\]")


class GrpcNoiseFilter(logging.Filter):
    """On grpc's loggers: a request that cannot be decoded becomes one line per method per
    interval without a traceback; anything else grpc logs is kept whole but limited to one
    record per kind per interval."""

    def __init__(self, limiter: LogLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or LogLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        exc_type = record.exc_info[0] if record.exc_info else None
        message = record.getMessage()
        found = _METHOD.search(message)
        where = found.group(1) if found else ""
        if exc_type is not None:
            kind: Hashable = (record.name, where, exc_type.__name__)
        else:
            # No method named: the message's template (not the caller-shaped text) is the kind.
            kind = (record.name, where or str(record.msg)[:80], record.levelno)
        suppressed = self.limiter.admit(kind)
        if suppressed is None:
            return False
        if exc_type is not None and exc_type.__name__ in BAD_INPUT_TYPES:
            exc = record.exc_info[1] if record.exc_info else None
            record.msg = "bad request to %s: %s: %s%s"
            record.args = (
                where or "(unknown method)",
                exc_type.__name__,
                clip(str(exc)),
                _held_back(suppressed),
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        elif suppressed:
            record.msg, record.args = "%s%s", (message, _held_back(suppressed))
        return True


def install_grpc_filter(interval_s: float = DEFAULT_INTERVAL_S) -> GrpcNoiseFilter:
    """Put one GrpcNoiseFilter on each of grpc's loggers (once: calling it again returns the
    filter already there, so a node started twice in one process is not filtered twice)."""
    for name in GRPC_LOGGERS:
        for existing in logging.getLogger(name).filters:
            if isinstance(existing, GrpcNoiseFilter):
                return existing
    # One filter (one limiter) for all of them: a kind is named by its logger anyway.
    noise = GrpcNoiseFilter(LogLimiter(interval_s))
    for name in GRPC_LOGGERS:
        logging.getLogger(name).addFilter(noise)
    return noise


# The servicers' own limiter: one per process, as the log is.
_SERVICER_LIMITER = LogLimiter()


def internal_error(
    logger: logging.Logger,
    where: str,
    exc: BaseException,
    limiter: LogLimiter | None = None,
) -> None:
    """A bug met while answering `where`: its traceback, once per (where, type) per interval."""
    limiter = limiter or _SERVICER_LIMITER
    suppressed = limiter.admit((where, type(exc).__name__))
    if suppressed is None:
        return
    logger.error(
        "internal error in %s%s",
        where,
        _held_back(suppressed),
        exc_info=(type(exc), exc, exc.__traceback__),
    )


def call_name(call: object) -> str:
    """Where a servicer's work comes from, for the log: `KVServicer.Put` for the function
    nested in KVServicer.Put, `KVServicer._get_many` for a partial of that method."""
    func = getattr(call, "func", call)
    name = str(getattr(func, "__qualname__", type(func).__name__))
    return name.split(".<locals>", 1)[0]

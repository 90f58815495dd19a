"""kvstore.rpc.badinput: one line per kind per interval, with what was held back; bad input
without a traceback, bugs with one. The clock is injected: no test sleeps."""

from __future__ import annotations

import logging
from functools import partial

import pytest
from google.protobuf.message import DecodeError

from kvstore.rpc.badinput import (
    GRPC_LOGGERS,
    MAX_DETAIL_CHARS,
    GrpcNoiseFilter,
    LogLimiter,
    call_name,
    install_grpc_filter,
    internal_error,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_interval_with_the_count_held_back() -> None:
    clock = FakeClock()
    limiter = LogLimiter(10.0, clock)
    assert limiter.admit("a") == 0
    assert [limiter.admit("a") for _ in range(99)] == [None] * 99
    assert limiter.admit("b") == 0  # another kind has its own window
    clock.now += 9.999
    assert limiter.admit("a") is None
    clock.now += 0.001
    assert limiter.admit("a") == 100  # 99 + the one just before the interval ended
    assert limiter.admit("a") is None
    clock.now += 10
    assert limiter.admit("a") == 1
    clock.now += 10
    assert limiter.admit("a") == 0


def test_kinds_are_bounded_whatever_callers_send() -> None:
    clock = FakeClock()
    limiter = LogLimiter(10.0, clock, max_kinds=4)
    assert [limiter.admit(i) for i in range(4)] == [0, 0, 0, 0]
    # Full: a new kind shares the overflow kind (one line, then held back).
    assert limiter.admit(100) == 0
    assert [limiter.admit(101 + i) for i in range(1000)] == [None] * 1000
    assert len(limiter._windows) <= 4
    # Once the interval is over, idle kinds are forgotten and a new one has its own window.
    clock.now += 10
    assert limiter.admit("fresh") == 0
    assert limiter.admit("fresh") is None
    assert len(limiter._windows) <= 4


def _grpc_record(exc: BaseException, method: str = "/kvstore.v1.KV/Put") -> logging.LogRecord:
    """What grpc's asyncio server logs when a servicer (or decoding its request) raised."""
    try:
        raise exc
    except BaseException as caught:
        info = (type(caught), caught, caught.__traceback__)
    return logging.LogRecord(
        "grpc._cython.cygrpc",
        logging.ERROR,
        "server.pyx.pxi",
        1,
        f"Unexpected [{type(exc).__name__}] raised by servicer method [{method}]",
        None,
        info,
    )


def test_undecodable_requests_are_one_line_without_traceback() -> None:
    clock = FakeClock()
    noise = GrpcNoiseFilter(LogLimiter(10.0, clock))
    detail = "Error parsing message with type 'kvstore.v1.PutRequest'" + "x" * 1000
    first = _grpc_record(DecodeError(detail))
    assert noise.filter(first)
    assert first.exc_info is None and first.levelno == logging.WARNING
    text = first.getMessage()
    assert text.startswith("bad request to /kvstore.v1.KV/Put: DecodeError: Error parsing")
    assert len(text) < MAX_DETAIL_CHARS + 100  # the caller's bytes are clipped
    assert not any(noise.filter(_grpc_record(DecodeError(detail))) for _ in range(599))
    # Another method is another kind.
    assert noise.filter(_grpc_record(DecodeError("x"), "/kvstore.v1.Peer/Gossip"))
    clock.now += 10
    later = _grpc_record(DecodeError(detail))
    assert noise.filter(later)
    assert "(599 more like it not logged since its last line)" in later.getMessage()


def test_other_grpc_errors_keep_their_traceback_but_are_limited() -> None:
    clock = FakeClock()
    noise = GrpcNoiseFilter(LogLimiter(10.0, clock))
    first = _grpc_record(RuntimeError("bug"))
    assert noise.filter(first)
    assert first.exc_info is not None and first.levelno == logging.ERROR
    assert not noise.filter(_grpc_record(RuntimeError("bug")))
    clock.now += 10
    later = _grpc_record(RuntimeError("bug"))
    assert noise.filter(later)
    assert later.exc_info is not None
    assert later.getMessage().endswith("(1 more like it not logged since its last line)")


def test_internal_errors_log_their_traceback_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = LogLimiter(10.0, clock)
    logger = logging.getLogger("test.badinput")
    with caplog.at_level(logging.ERROR, logger="test.badinput"):
        for _ in range(50):
            try:
                raise KeyError("k")
            except KeyError as exc:
                internal_error(logger, "KVServicer.Put", exc, limiter)
        internal_error(logger, "KVServicer.Get", ValueError("v"), limiter)
        clock.now += 10
        internal_error(logger, "KVServicer.Put", KeyError("k"), limiter)
    assert [r.getMessage() for r in caplog.records] == [
        "internal error in KVServicer.Put",
        "internal error in KVServicer.Get",
        "internal error in KVServicer.Put (49 more like it not logged since its last line)",
    ]
    assert all(r.exc_info for r in caplog.records)
    assert "Traceback" in caplog.text  # the raised one's, with its frames


class _Servicer:
    def _get_many(self, request: object) -> None: ...

    def Put(self) -> object:
        def call() -> None: ...

        return call


def test_call_name_names_the_servicer_method() -> None:
    servicer = _Servicer()
    assert call_name(servicer.Put()) == "_Servicer.Put"
    assert call_name(partial(servicer._get_many, None)) == "_Servicer._get_many"


def test_install_is_idempotent() -> None:
    loggers = [logging.getLogger(name) for name in GRPC_LOGGERS]
    before = [list(lg.filters) for lg in loggers]
    try:
        first = install_grpc_filter()
        assert install_grpc_filter() is first
        for lg in loggers:
            assert sum(isinstance(f, GrpcNoiseFilter) for f in lg.filters) == 1
    finally:
        for lg, filters in zip(loggers, before, strict=True):
            lg.filters[:] = filters

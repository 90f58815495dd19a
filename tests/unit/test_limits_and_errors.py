"""Request limits (kvstore.core.limits), the error hierarchy (kvstore.errors), its mapping to
gRPC statuses and back (kvstore.rpc.status), and the client's argument checks."""

from __future__ import annotations

import grpc
import pytest

from kvstore import errors
from kvstore.client import _common
from kvstore.core.limits import Limits, Quorum
from kvstore.core.versions import Dot, KeyState, make_clock
from kvstore.errors import (
    ERRORS_BY_CODE,
    ERRORS_BY_NAME,
    ConfigError,
    InternalError,
    InvalidArgument,
    InvalidContext,
    InvalidKey,
    InvalidOption,
    KvError,
    Timeout,
    TransportError,
    Unavailable,
    ValueTooLarge,
)
from kvstore.rpc import status

# ---- Limits ----


def test_check_key() -> None:
    limits = Limits(max_key_bytes=8)
    limits.check_key(b"k")
    limits.check_key(b"x" * 8)
    with pytest.raises(InvalidKey, match="empty"):
        limits.check_key(b"")
    with pytest.raises(InvalidKey, match="9 bytes"):
        limits.check_key(b"x" * 9)
    with pytest.raises(InvalidKey):
        limits.check_key("text")  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        limits.check_key(bytearray(b"k"))  # type: ignore[arg-type]


def test_default_key_limit_is_1024() -> None:
    Limits().check_key(b"k" * 1024)
    with pytest.raises(InvalidKey):
        Limits().check_key(b"k" * 1025)


def test_check_value() -> None:
    limits = Limits(max_value_bytes=4)
    limits.check_value(b"")
    limits.check_value(b"1234")
    with pytest.raises(ValueTooLarge, match="5 bytes"):
        limits.check_value(b"12345")
    Limits().check_value(b"v" * (1 << 20))
    with pytest.raises(ValueTooLarge):
        Limits().check_value(b"v" * ((1 << 20) + 1))
    zero = Limits(max_value_bytes=0)
    zero.check_value(b"")
    with pytest.raises(ValueTooLarge):
        zero.check_value(b"v")


def test_timeout_ms() -> None:
    limits = Limits(request_timeout_ms=500, max_request_timeout_ms=2_000)
    assert limits.timeout_ms(0) == 500
    assert limits.timeout_ms(1) == 1
    assert limits.timeout_ms(2_000) == 2_000
    for bad in (-1, 2_001, 10**9):
        with pytest.raises(InvalidOption):
            limits.timeout_ms(bad)


def test_limits_check() -> None:
    Limits().check()
    for bad in (
        Limits(max_key_bytes=0),
        Limits(max_value_bytes=-1),
        Limits(max_siblings=0),
        Limits(request_timeout_ms=0),
        Limits(request_timeout_ms=61_000),
        Limits(max_request_timeout_ms=0),
        Limits(max_key_bytes=True),  # type: ignore[arg-type]
        Limits(max_clock_entries=0),
        Limits(max_clock_entries=15),
        Limits(max_clock_entries=4097),
    ):
        with pytest.raises(ConfigError):
            bad.check()


def state(vector: dict[str, int], *holes: tuple[str, int]) -> KeyState:
    return KeyState(make_clock(vector, [Dot(a, c) for a, c in holes]), ())


def test_check_clock_growth() -> None:
    Limits(max_clock_entries=16).check()
    limits = Limits(max_clock_entries=3)  # below the configurable floor, to keep cases small
    small, full = state({"a": 1}), state({"a": 1, "b": 1, "c": 1})
    limits.check_clock_growth(small, state({"a": 2, "x": 1, "y": 1}), "a")  # 3: at the limit
    with pytest.raises(InvalidContext, match=r"4 entries.*max_clock_entries"):
        limits.check_clock_growth(small, state({"a": 2, "x": 1, "y": 1, "z": 1}), "a")
    with pytest.raises(InvalidContext):  # holes count as entries
        limits.check_clock_growth(small, state({"a": 2, "x": 3, "y": 1}, ("x", 1)), "a")
    # Past the limit already (merges are never refused): the write may not add to it, but
    # the coordinator's own entry always fits, and so does what was there.
    limits.check_clock_growth(full, state({"a": 2, "b": 1, "c": 1}), "a")
    limits.check_clock_growth(full, state({"a": 1, "b": 1, "c": 1, "n": 1}), "n")
    with pytest.raises(InvalidContext):
        limits.check_clock_growth(full, state({"a": 1, "b": 1, "c": 1, "x": 1}), "a")
    with pytest.raises(InvalidContext):
        limits.check_clock_growth(full, state({"a": 1, "b": 1, "c": 1, "n": 1, "x": 1}), "n")


def test_quorum_read_and_write_quorum() -> None:
    quorum = Quorum(n=3, r=2, w=1)
    assert quorum.read_quorum(0) == 2
    assert quorum.write_quorum(0) == 1
    for requested in (1, 2, 3):
        assert quorum.read_quorum(requested) == requested
        assert quorum.write_quorum(requested) == requested
    for bad in (-1, 4, 100):
        with pytest.raises(InvalidOption, match="r must be"):
            quorum.read_quorum(bad)
        with pytest.raises(InvalidOption, match="w must be"):
            quorum.write_quorum(bad)


def test_quorum_check() -> None:
    Quorum().check()
    Quorum(1, 1, 1).check()
    for bad in (Quorum(3, 4, 2), Quorum(3, 2, 4), Quorum(0, 1, 1), Quorum(3, 0, 2)):
        with pytest.raises(ConfigError):
            bad.check()


# ---- the error hierarchy ----


def test_error_hierarchy() -> None:
    for cls in (InvalidKey, ValueTooLarge, errors.InvalidContext, InvalidOption):
        assert issubclass(cls, InvalidArgument)
        assert cls.code == "INVALID_ARGUMENT"
    assert issubclass(TransportError, Unavailable)
    assert all(issubclass(cls, KvError) for cls in ERRORS_BY_NAME.values())
    assert all(name == cls.__name__ for name, cls in ERRORS_BY_NAME.items())
    # Every KvError subclass defined in the module is registered.
    defined = {
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, KvError)
    }
    assert defined == set(ERRORS_BY_NAME.values())


def make(cls: type[KvError], message: str = "boom") -> KvError:
    if issubclass(cls, Unavailable):
        return cls(message, 1, 2)
    return cls(message)


@pytest.mark.parametrize("cls", sorted(ERRORS_BY_NAME.values(), key=lambda c: c.__name__))
def test_every_error_maps_to_a_real_status_code(cls: type[KvError]) -> None:
    code = status.status_code(make(cls))
    assert isinstance(code, grpc.StatusCode)
    assert code.name == cls.code
    if cls is not KvError:
        assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN)


def test_status_codes_of_the_main_errors() -> None:
    assert status.status_code(InvalidKey("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status.status_code(ValueTooLarge("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status.status_code(errors.TooManySiblings("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status.status_code(Unavailable("x", 1, 2)) == grpc.StatusCode.UNAVAILABLE
    assert status.status_code(Timeout("x")) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert status.status_code(errors.StorageError("x")) == grpc.StatusCode.INTERNAL


def test_errors_by_code_names_real_status_codes() -> None:
    for name, cls in ERRORS_BY_CODE.items():
        assert isinstance(getattr(grpc.StatusCode, name), grpc.StatusCode)
        assert issubclass(cls, KvError)


class FakeRpcError(grpc.RpcError):
    """What a failed grpc call raises, as far as kvstore.rpc.status reads it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str | None,
        metadata: tuple[tuple[str, str | bytes], ...] | None = (),
    ) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._metadata = metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...] | None:
        return self._metadata


def as_rpc_error(error: KvError) -> FakeRpcError:
    return FakeRpcError(status.status_code(error), str(error), status.trailing_metadata(error))


@pytest.mark.parametrize("cls", sorted(ERRORS_BY_NAME.values(), key=lambda c: c.__name__))
def test_error_round_trips_through_a_status(cls: type[KvError]) -> None:
    original = make(cls, f"{cls.__name__} happened")
    rebuilt = status.error_from_rpc(as_rpc_error(original))
    assert type(rebuilt) is cls
    assert str(rebuilt) == str(original)
    if isinstance(original, Unavailable):
        assert isinstance(rebuilt, Unavailable)
        assert (rebuilt.answered, rebuilt.required) == (1, 2)
    # A kvstore answer is never a transport failure, whatever its code.
    assert not status.is_transport_failure(as_rpc_error(original))


def test_unavailable_counts_survive_the_round_trip() -> None:
    original = Unavailable("get: 1 of 3 required replicas answered", 1, 3)
    metadata = dict(status.trailing_metadata(original))
    assert metadata == {
        status.ERROR_KEY: "Unavailable",
        status.ANSWERED_KEY: "1",
        status.REQUIRED_KEY: "3",
    }
    rebuilt = status.error_from_rpc(as_rpc_error(original), "10.0.0.1:7101")
    assert isinstance(rebuilt, Unavailable) and not isinstance(rebuilt, TransportError)
    assert (rebuilt.answered, rebuilt.required) == (1, 3)
    assert "1 of 3" in str(rebuilt)


def test_trailing_metadata_of_plain_errors_names_only_the_class() -> None:
    assert status.trailing_metadata(InvalidKey("x")) == ((status.ERROR_KEY, "InvalidKey"),)


def test_bare_unavailable_is_a_transport_failure() -> None:
    exc = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", ())
    assert status.is_transport_failure(exc)
    rebuilt = status.error_from_rpc(exc, "10.0.0.1:7101")
    assert type(rebuilt) is TransportError
    assert "10.0.0.1:7101" in str(rebuilt)
    assert "failed to connect" in str(rebuilt)
    refused = "failed to connect to all addresses; last error: Connection refused"
    assert status.is_transport_failure(FakeRpcError(grpc.StatusCode.UNAVAILABLE, refused, None))
    error, may_retry = _common.failure(exc, "10.0.0.1:7101")
    assert isinstance(error, TransportError) and may_retry


@pytest.mark.parametrize("details", ["Socket closed", "recvmsg:Connection reset by peer", ""])
def test_unavailable_mid_call_is_not_retried(details: str) -> None:
    """The request may have been applied: sending it again elsewhere could apply it twice."""
    exc = FakeRpcError(grpc.StatusCode.UNAVAILABLE, details, ())
    assert not status.is_transport_failure(exc)
    error, may_retry = _common.failure(exc, "10.0.0.1:7101")
    assert isinstance(error, TransportError) and not may_retry


def test_other_bare_statuses_map_by_code() -> None:
    cases = {
        grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidArgument,
        grpc.StatusCode.FAILED_PRECONDITION: errors.TooManySiblings,
        grpc.StatusCode.INTERNAL: InternalError,
        grpc.StatusCode.NOT_FOUND: InternalError,
        grpc.StatusCode.UNIMPLEMENTED: InternalError,
    }
    for code, cls in cases.items():
        exc = FakeRpcError(code, "detail", ())
        assert type(status.error_from_rpc(exc)) is cls, code
        assert not status.is_transport_failure(exc)
        error, may_retry = _common.failure(exc, "a:1")
        assert type(error) is cls and not may_retry


def test_unknown_class_name_falls_back_to_the_code() -> None:
    exc = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "d", ((status.ERROR_KEY, "Bogus"),))
    assert type(status.error_from_rpc(exc)) is InvalidArgument


def test_non_string_metadata_is_ignored() -> None:
    exc = FakeRpcError(
        grpc.StatusCode.UNAVAILABLE, "failed to connect", (("kvstore-error-bin", b"\x00"),)
    )
    assert status.is_transport_failure(exc)
    assert type(status.error_from_rpc(exc)) is TransportError


def test_missing_details_fall_back_to_the_exception_text() -> None:
    exc = FakeRpcError(grpc.StatusCode.INTERNAL, None, ())
    assert isinstance(status.error_from_rpc(exc), InternalError)


# ---- the client's argument checks ----


def test_client_key_value_context_checks() -> None:
    assert _common.key_bytes("k\u00e9") == "k\u00e9".encode()
    assert _common.key_bytes(bytearray(b"k")) == b"k"  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        _common.key_bytes("")
    with pytest.raises(InvalidKey):
        _common.key_bytes(5)  # type: ignore[arg-type]
    assert _common.value_bytes(memoryview(b"v")) == b"v"  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        _common.value_bytes("v")  # type: ignore[arg-type]
    assert _common.context_bytes(None) == b""
    with pytest.raises(InvalidArgument):
        _common.context_bytes("ctx")  # type: ignore[arg-type]


def test_client_option_checks() -> None:
    assert _common.quorum_option("r", None) == 0
    assert _common.quorum_option("r", 2) == 2
    for bad in (0, -1, True, 1.5):
        with pytest.raises(InvalidOption):
            _common.quorum_option("r", bad)  # type: ignore[arg-type]
    assert _common.check_timeout(2) == 2.0
    for bad in (0, -1, 601, float("nan"), "1"):
        with pytest.raises(InvalidOption):
            _common.check_timeout(bad)  # type: ignore[arg-type]


def test_client_seed_parsing() -> None:
    assert _common.parse_seeds(" a:1, b:2 ,") == ["a:1", "b:2"]
    assert _common.parse_seeds(["a:1"]) == ["a:1"]
    for bad in ("", " , ", "a", "a:x", ":1"):
        with pytest.raises(InvalidArgument):
            _common.parse_seeds(bad)


@pytest.mark.parametrize("target", ["nonexistent.invalid:7100", "127.0.0.1:{refused}"])
def test_real_grpc_failures_before_sending_are_transport_failures(target: str) -> None:
    """The strings grpcio gives for a name that does not resolve (a stopped container's) and
    a refused port: the request never left, so it may go to another node."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from kvstore.node.local_cluster import free_ports

    address = target.format(refused=free_ports(1)[0])
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert status.is_transport_failure(caught.value), caught.value.details()

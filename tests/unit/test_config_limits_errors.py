"""Configuration precedence and validation; request limits; errors mapped to gRPC and back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import grpc
import pytest

from kvstore import errors
from kvstore.config import load_node_config
from kvstore.core.limits import Limits, Quorum
from kvstore.errors import ConfigError, InvalidKey, InvalidOption, ValueTooLarge
from kvstore.rpc import status

SEEDS = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    defaults = load_node_config(flags={"seeds": SEEDS})
    assert (defaults.quorum.n, defaults.quorum.r, defaults.quorum.w) == (3, 2, 2)
    assert defaults.limits == Limits() and defaults.partitions == 256
    assert defaults.node_id == "127.0.0.1:7101" and "127.0.0.1:7101" in defaults.members

    file = tmp_path / "node.toml"
    file.write_text(
        f'seeds = "{SEEDS}"\nw = 3\nmax_value_bytes = 10\nnode_id = "file"\nsync_writes = true\n'
    )
    from_file = load_node_config(str(file))
    assert from_file.quorum.w == 3 and from_file.limits.max_value_bytes == 10
    assert from_file.node_id == "file" and from_file.sync_writes is True

    env = {"KVSTORE_MAX_VALUE_BYTES": "20", "KVSTORE_NODE_ID": "env", "KVSTORE_SYNC_WRITES": "no"}
    from_env = load_node_config(str(file), env)
    assert from_env.limits.max_value_bytes == 20 and from_env.node_id == "env"
    assert from_env.sync_writes is False and from_env.quorum.w == 3

    from_flags = load_node_config(str(file), env, {"node_id": "flag", "max_value_bytes": "30"})
    assert from_flags.node_id == "flag" and from_flags.limits.max_value_bytes == 30


def test_members_include_this_node(tmp_path: Path) -> None:
    config = load_node_config(flags={"seeds": "10.0.0.1:7000", "listen": "127.0.0.1:9000"})
    assert config.members == ("10.0.0.1:7000", "127.0.0.1:9000")


@pytest.mark.parametrize(
    "env",
    [
        {"KVSTORE_REPLICAS": "3"},  # unknown name
        {"KVSTORE_N": "three"},
        {"KVSTORE_R": "4"},  # r > n
        {"KVSTORE_W": "0"},
        {"KVSTORE_PARTITIONS": "100"},  # not a power of two
        {"KVSTORE_SEEDS": "nohost"},
        {"KVSTORE_LISTEN": "127.0.0.1:70000"},
        {"KVSTORE_SYNC_WRITES": "maybe"},
        {"KVSTORE_NODE_ID": "has space"},
        {"KVSTORE_MAX_KEY_BYTES": "0"},
        {"KVSTORE_REQUEST_TIMEOUT_MS": "999999999"},
        {"KVSTORE_ADVERTISE": "0.0.0.0:7101"},
    ],
)
def test_bad_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_node_config(env=env)


def test_bad_file_and_unknown_flag(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("n = \n")
    for path in (unknown, broken, tmp_path / "missing.toml"):
        with pytest.raises(ConfigError):
            load_node_config(str(path))
    with pytest.raises(ConfigError):
        load_node_config(flags={"colour": "blue"})


def test_limits_raise_typed_errors() -> None:
    limits = Limits(max_key_bytes=4, max_value_bytes=3)
    limits.check_key(b"abcd")
    for key in (b"", b"abcde"):
        with pytest.raises(InvalidKey):
            limits.check_key(key)
    with pytest.raises(InvalidKey):
        limits.check_key("str")  # type: ignore[arg-type]
    limits.check_value(b"abc")
    with pytest.raises(ValueTooLarge):
        limits.check_value(b"abcd")
    assert limits.timeout_ms(0) == limits.request_timeout_ms
    assert limits.timeout_ms(10) == 10
    for bad in (-1, limits.max_request_timeout_ms + 1):
        with pytest.raises(InvalidOption):
            limits.timeout_ms(bad)
    quorum = Quorum(3, 2, 2)
    assert quorum.read_quorum(0) == 2 and quorum.write_quorum(3) == 3
    with pytest.raises(InvalidOption):
        quorum.write_quorum(4)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing=()) -> None:  # type: ignore[no-untyped-def]
        self._code, self._details, self._trailing = code, details, tuple(trailing)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return self._trailing


@pytest.mark.parametrize("cls", sorted(errors.ERRORS_BY_NAME.values(), key=lambda c: c.__name__))
def test_every_error_survives_the_trip_through_grpc(cls: type[errors.KvError]) -> None:
    error = cls("boom", 2, 3) if issubclass(cls, errors.Unavailable) else cls("boom")
    code = status.status_code(error)
    assert code.name == error.code != "UNKNOWN" or cls is errors.KvError
    rebuilt = status.error_from_rpc(FakeRpcError(code, "boom", status.trailing_metadata(error)))
    assert type(rebuilt) is cls and str(rebuilt) == "boom"
    if isinstance(error, errors.Unavailable):
        assert isinstance(rebuilt, errors.Unavailable)
        assert (rebuilt.answered, rebuilt.required) == (2, 3)
    assert not status.is_transport_failure(
        FakeRpcError(code, "boom", status.trailing_metadata(error))
    )


def test_bare_statuses_map_by_code() -> None:
    refused = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert status.is_transport_failure(refused)
    assert isinstance(status.error_from_rpc(refused), errors.TransportError)
    late = status.error_from_rpc(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "late"))
    assert isinstance(late, errors.Timeout)
    big = status.error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big"))
    assert isinstance(big, errors.InvalidArgument)


def test_generated_code_matches_the_schema(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("generate", root / "proto" / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    for name in generate.GENERATED:
        assert (tmp_path / name).read_bytes() == (root / "kvstore" / "_pb" / name).read_bytes(), (
            f"kvstore/_pb/{name} is stale: run `make proto`"
        )

"""Node configuration: defaults < TOML file < KVSTORE_* env < flags, and every check."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.config import SETTINGS, NodeConfig, load_node_config, parse_address
from kvstore.core.limits import Limits, Quorum
from kvstore.errors import ConfigError, KvError

SEEDS = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


# ---- precedence ----


def test_defaults() -> None:
    config = load_node_config()
    assert isinstance(config, NodeConfig)
    assert config.listen == config.advertise == "127.0.0.1:7101"
    assert config.node_id == "127.0.0.1:7101"
    assert config.data_dir == str(Path("data") / "127.0.0.1_7101")
    assert config.seeds == ()
    assert config.members == ("127.0.0.1:7101",)
    assert config.partitions == 256
    assert config.sync_writes is False
    assert config.quorum == Quorum(3, 2, 2)
    assert config.limits == Limits()


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        f'seeds = "{SEEDS}"\n'
        'node_id = "from-file"\n'
        "w = 3\n"
        "max_value_bytes = 1000\n"
        "partitions = 64\n"
        "sync_writes = true\n"
        'data_dir = "/var/lib/kv"\n',
    )
    config = load_node_config(path)
    assert config.node_id == "from-file"
    assert config.quorum == Quorum(3, 2, 3)
    assert config.limits.max_value_bytes == 1000
    assert config.limits.max_key_bytes == Limits().max_key_bytes  # untouched default
    assert config.partitions == 64
    assert config.sync_writes is True
    assert config.data_dir == "/var/lib/kv"
    assert config.seeds == tuple(SEEDS.split(","))


def test_file_seeds_may_be_a_toml_list(tmp_path: Path) -> None:
    path = toml(tmp_path, 'seeds = ["10.0.0.1:7000", " 10.0.0.2:7000 "]\n')
    assert load_node_config(path).seeds == ("10.0.0.1:7000", "10.0.0.2:7000")


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    path = toml(tmp_path, 'node_id = "file"\nmax_value_bytes = 1000\nr = 1\nsync_writes = true\n')
    env = {"KVSTORE_NODE_ID": "env", "KVSTORE_MAX_VALUE_BYTES": "2000", "KVSTORE_SYNC_WRITES": "0"}
    config = load_node_config(path, env)
    assert config.node_id == "env"
    assert config.limits.max_value_bytes == 2000
    assert config.sync_writes is False
    assert config.quorum.r == 1  # only in the file: kept

    flags = {"node_id": "flag", "max_value_bytes": "3000", "sync_writes": None}
    config = load_node_config(path, env, flags)
    assert config.node_id == "flag"
    assert config.limits.max_value_bytes == 3000  # a flag given as text is read as a number
    assert config.sync_writes is False  # a None flag (not given) leaves the env value
    assert config.quorum.r == 1


def test_env_without_the_prefix_is_ignored() -> None:
    env = {"HOME": "/root", "NODE_ID": "x", "kvstore_node_id": "lower", "KVSTOREX": "1"}
    assert load_node_config(env=env).node_id == "127.0.0.1:7101"


def test_env_seeds_are_comma_separated() -> None:
    config = load_node_config(env={"KVSTORE_SEEDS": " 10.0.0.1:1, 10.0.0.2:2 ,,"})
    assert config.seeds == ("10.0.0.1:1", "10.0.0.2:2")


def test_members_include_advertise_once_and_sorted() -> None:
    config = load_node_config(
        flags={
            "seeds": "10.0.0.9:7000,10.0.0.1:7000",
            "listen": "0.0.0.0:7000",
            "insecure": True,
        },
        env={"KVSTORE_ADVERTISE": "10.0.0.5:7000"},
    )
    assert config.listen == "0.0.0.0:7000"
    assert config.advertise == "10.0.0.5:7000"
    assert config.node_id == "10.0.0.5:7000"
    assert config.members == ("10.0.0.1:7000", "10.0.0.5:7000", "10.0.0.9:7000")
    # Not given: advertise is the listen address, and a member too.
    config = load_node_config(flags={"seeds": "10.0.0.1:7000", "listen": "127.0.0.1:9000"})
    assert config.members == ("10.0.0.1:7000", "127.0.0.1:9000")
    # Listed among the seeds too: still once.
    config = load_node_config(flags={"seeds": SEEDS, "advertise": "127.0.0.1:7102"})
    assert config.members == tuple(SEEDS.split(","))


def test_every_setting_name_is_accepted_in_every_source(tmp_path: Path) -> None:
    assert {
        "node_id",
        "listen",
        "advertise",
        "data_dir",
        "seeds",
        "partitions",
        "sync_writes",
        "n",
        "r",
        "w",
        "max_key_bytes",
        "max_value_bytes",
        "max_siblings",
        "max_clock_entries",
        "max_batch_items",
        "request_timeout_ms",
        "max_request_timeout_ms",
        "gossip_interval_ms",
        "phi_threshold",
        "replica_timeout_ms",
        "hint_interval_ms",
        "hint_max_age_s",
        "hint_max_bytes",
        "anti_entropy_interval_ms",
        "handoff_interval_ms",
        "tombstone_grace_s",
        "tombstone_gc_interval_ms",
        "auto_join",
        "peer_routes",
        "max_inflight_requests",
        "max_inflight_request_bytes",
        "max_connections",
        "connection_idle_ms",
        "client_listen",
        "client_advertise",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "auth_tokens",
        "insecure",
        "client_certs",
        "metrics_listen",
        "log_level",
        "log_format",
    } == SETTINGS
    path = toml(tmp_path, "max_siblings = 5\nrequest_timeout_ms = 700\n")
    config = load_node_config(
        path, {"KVSTORE_MAX_REQUEST_TIMEOUT_MS": "900"}, {"max_key_bytes": 10}
    )
    assert config.limits == Limits(
        max_key_bytes=10, max_siblings=5, request_timeout_ms=700, max_request_timeout_ms=900
    )


# ---- sync_writes ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_sync_writes_parsing(text: str, expected: bool) -> None:
    assert load_node_config(env={"KVSTORE_SYNC_WRITES": text}).sync_writes is expected
    assert load_node_config(flags={"sync_writes": text}).sync_writes is expected


@pytest.mark.parametrize("text", ["maybe", "", "2", "tru"])
def test_sync_writes_rejects_other_words(text: str) -> None:
    with pytest.raises(ConfigError):
        load_node_config(env={"KVSTORE_SYNC_WRITES": text})


def test_sync_writes_from_toml_bool(tmp_path: Path) -> None:
    assert load_node_config(toml(tmp_path, "sync_writes = false\n")).sync_writes is False
    assert load_node_config(toml(tmp_path, "sync_writes = true\n")).sync_writes is True


# ---- unknown names ----


def test_unknown_key_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        load_node_config(toml(tmp_path, "replicas = 3\n"))


def test_unknown_table_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_node_config(toml(tmp_path, "[quorum]\nn = 3\n"))


def test_unknown_env_var() -> None:
    with pytest.raises(ConfigError, match="KVSTORE_REPLICAS"):
        load_node_config(env={"KVSTORE_REPLICAS": "3"})
    with pytest.raises(ConfigError):
        load_node_config(env={"KVSTORE_": "x"})


def test_unknown_flag() -> None:
    with pytest.raises(ConfigError, match="replicas"):
        load_node_config(flags={"replicas": 3})
    with pytest.raises(ConfigError):
        load_node_config(flags={"replicas": None})  # even when not given a value


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_node_config(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError):
        load_node_config(toml(tmp_path, "n = = 3\n"))


# ---- types and ranges ----


@pytest.mark.parametrize(
    "text",
    [
        'n = "three"\n',
        "n = true\n",  # a bool is not an int
        "n = [3]\n",
        "partitions = 2.5\n",  # a fractional number is not silently truncated
        "request_timeout_ms = 1500.7\n",
        "node_id = 5\n",
        "listen = 7101\n",
        'listen = ["127.0.0.1:7101"]\n',
        "seeds = 5\n",
        "sync_writes = 2\n",
    ],
)
def test_bad_types_in_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_node_config(toml(tmp_path, text))


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        ({"partitions": 256.0}, "partitions"),
        ({"w": 2.7}, "w"),
        ({"max_siblings": True}, "max_siblings"),
        ({"request_timeout_ms": [500]}, "request_timeout_ms"),
    ],
)
def test_a_non_integer_for_an_integer_setting_is_named(flags: dict[str, object], name: str) -> None:
    with pytest.raises(
        ConfigError, match=f"{name} from --{name.replace('_', '-')} must be an integer"
    ):
        load_node_config(flags=flags)


@pytest.mark.parametrize(
    "env",
    [
        {"KVSTORE_N": "three"},
        {"KVSTORE_N": "3.0"},
        {"KVSTORE_N": ""},
        {"KVSTORE_PARTITIONS": "0x100"},
    ],
)
def test_bad_types_in_env(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_node_config(env=env)


@pytest.mark.parametrize(
    "flags",
    [{"node_id": 7}, {"listen": None, "advertise": 5}, {"r": "x"}],
)
def test_bad_types_in_flags(flags: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_node_config(flags=flags)


@pytest.mark.parametrize(
    "flags",
    [
        {"r": 4},  # r > n
        {"w": 4},  # w > n
        {"n": 2, "r": 3},
        {"n": 0},
        {"n": 65},
        {"r": 0},
        {"w": -1},
        {"partitions": 100},  # not a power of two
        {"partitions": 0},
        {"partitions": 2, "seeds": SEEDS},  # fewer partitions than members
        {"max_key_bytes": 0},
        {"max_key_bytes": 64 * 1024 + 1},
        {"max_value_bytes": -1},
        {"max_siblings": 0},
        {"request_timeout_ms": 0},
        {"request_timeout_ms": 70_000},  # beyond max_request_timeout_ms
        {"max_request_timeout_ms": 10 * 60 * 1000 + 1},
        {"node_id": "has space"},
        {"node_id": ""},
        {"node_id": "x" * 65},
    ],
)
def test_out_of_range_values(flags: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        load_node_config(flags=flags)
    assert isinstance(info.value, KvError)


def test_r_equal_to_n_is_fine() -> None:
    config = load_node_config(flags={"n": 1, "r": 1, "w": 1})
    assert config.quorum == Quorum(1, 1, 1)


# ---- addresses ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7101", "127.0.0.1:7101"),
        (" localhost:80 ", "localhost:80"),
        ("example.com:007", "example.com:7"),
        ("[::1]:9000", "[::1]:9000"),
        ("h:65535", "h:65535"),
    ],
)
def test_parse_address(text: str, expected: str) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "7101", ":7101", "host:", "host:0", "host:65536", "host:-1", "host:abc", "host"]
)
def test_parse_address_rejects_bad_addresses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(text)


@pytest.mark.parametrize(
    "flags",
    [
        {"listen": "nohost"},
        {"listen": "127.0.0.1:0"},
        {"advertise": "127.0.0.1:99999"},
        {"seeds": "127.0.0.1:7101,nohost"},
        {"seeds": "127.0.0.1"},
        {"listen": "0.0.0.0:7101"},  # then advertise defaults to a wildcard
        {"advertise": "0.0.0.0:7101"},
        {"advertise": "[::]:7101"},
    ],
)
def test_bad_addresses_are_config_errors(flags: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_node_config(flags=flags)


def test_addresses_are_normalised() -> None:
    config = load_node_config(flags={"listen": " 127.0.0.1:07101 ", "seeds": "a:01"})
    assert config.listen == "127.0.0.1:7101"
    assert config.seeds == ("a:1",)


# ---- auto_join and peer_routes ----


def test_auto_join_from_env_and_default_off() -> None:
    assert load_node_config(flags={"seeds": SEEDS}).auto_join is False
    assert load_node_config(env={"KVSTORE_AUTO_JOIN": "true"}).auto_join is True
    assert load_node_config(flags={"auto_join": True}).auto_join is True


def test_peer_routes_from_env_are_normalised_pairs() -> None:
    config = load_node_config(
        env={
            "KVSTORE_PEER_ROUTES": " 127.0.0.1:7102=127.0.0.1:9002 , 127.0.0.1:07103=127.0.0.1:9003"
        }
    )
    assert dict(config.peer_routes) == {
        "127.0.0.1:7102": "127.0.0.1:9002",
        "127.0.0.1:7103": "127.0.0.1:9003",
    }


def test_peer_routes_from_a_toml_table(tmp_path: Path) -> None:
    path = toml(tmp_path, '[peer_routes]\n"127.0.0.1:7102" = "127.0.0.1:9002"\n')
    assert load_node_config(path).peer_routes == (("127.0.0.1:7102", "127.0.0.1:9002"),)


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:7102", "127.0.0.1:7102=nowhere", "=127.0.0.1:1", "a:1=b:2,a:1=c:3"],
)
def test_bad_peer_routes_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"peer_routes|address"):
        load_node_config(env={"KVSTORE_PEER_ROUTES": text})


# ---- the two ports and protected mode ----


def test_the_client_port_defaults_to_the_cluster_port_plus_the_offset() -> None:
    config = load_node_config(flags={"listen": "127.0.0.1:7101", "advertise": "127.0.0.1:7101"})
    assert config.client_listen == "127.0.0.1:8101"
    assert config.client_advertise == "127.0.0.1:8101"
    with pytest.raises(ConfigError, match="client_listen must differ"):
        load_node_config(flags={"listen": "127.0.0.1:7101", "client_listen": "127.0.0.1:7101"})


@pytest.mark.parametrize("listen", ["0.0.0.0:7101", "10.1.2.3:7101", "[::]:7101"])
def test_no_tls_binds_loopback_only_unless_insecure(listen: str) -> None:
    flags = {"listen": listen, "advertise": "10.1.2.3:7101"}
    with pytest.raises(ConfigError, match="without TLS"):
        load_node_config(flags=flags)
    assert load_node_config(flags={**flags, "insecure": True}).security.insecure


def test_a_client_port_off_loopback_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="without TLS"):
        load_node_config(flags={"listen": "127.0.0.1:7101", "client_listen": "0.0.0.0:8101"})


def test_tls_material_goes_together_and_tokens_need_tls() -> None:
    with pytest.raises(ConfigError, match="go together"):
        load_node_config(flags={"tls_ca": "ca.pem"})
    with pytest.raises(ConfigError, match="needs TLS"):
        load_node_config(flags={"auth_tokens": "tokens.txt"})


# ---- observability: metrics endpoint and logging ----


def test_metrics_listen_defaults_to_the_cluster_port_plus_2000() -> None:
    assert load_node_config().metrics_listen == "127.0.0.1:9101"
    assert load_node_config(flags={"listen": "10.0.0.5:7000", "insecure": True}).metrics_listen == (
        "10.0.0.5:9000"
    )


def test_metrics_listen_given_or_off(tmp_path: Path) -> None:
    assert load_node_config(env={"KVSTORE_METRICS_LISTEN": "127.0.0.1:9999"}).metrics_listen == (
        "127.0.0.1:9999"
    )
    assert load_node_config(toml(tmp_path, 'metrics_listen = "off"\n')).metrics_listen == ""
    assert load_node_config(flags={"metrics_listen": ""}).metrics_listen == ""


@pytest.mark.parametrize("bad", ["9101", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:7101"])
def test_metrics_listen_is_validated(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"address|metrics_listen"):
        load_node_config(flags={"metrics_listen": bad})


def test_metrics_listen_has_no_default_past_the_last_port() -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_node_config(flags={"listen": "127.0.0.1:64000", "client_listen": "127.0.0.1:7000"})


def test_log_level_and_format_from_env_file_and_flags(tmp_path: Path) -> None:
    config = load_node_config()
    assert (config.log_level, config.log_format) == ("info", "text")
    env = {"KVSTORE_LOG_LEVEL": "WARNING", "KVSTORE_LOG_FORMAT": "json"}
    config = load_node_config(env=env)
    assert (config.log_level, config.log_format) == ("warning", "json")
    path = toml(tmp_path, 'log_level = "error"\nlog_format = "json"\n')
    assert load_node_config(path).log_level == "error"
    # The flag wins over the environment, which wins over the file.
    assert load_node_config(path, env, {"log_level": "debug"}).log_level == "debug"
    assert load_node_config(path, env).log_level == "warning"


@pytest.mark.parametrize(
    ("name", "bad"), [("log_level", "verbose"), ("log_level", ""), ("log_format", "xml")]
)
def test_log_settings_are_validated(name: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_node_config(env={f"KVSTORE_{name.upper()}": bad})

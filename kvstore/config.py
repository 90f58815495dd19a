"""Node configuration, read in one place: defaults < TOML file < KVSTORE_* env < CLI flags.

Every setting has one flat name used in all three sources (`max_value_bytes` in the file,
`KVSTORE_MAX_VALUE_BYTES` in the environment, `--max-value-bytes` as a flag). Unknown names
are errors, not silently ignored: a misspelt setting should never look like it took effect.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvstore.core.limits import Limits, Quorum
from kvstore.core.ring import DEFAULT_PARTITIONS, Ring, RingError
from kvstore.errors import ConfigError

ENV_PREFIX = "KVSTORE_"
_NODE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Background:
    """Timers and bounds of the work a node does besides answering requests."""

    # Gossip with one random peer this often; peers' heartbeats arrive through it.
    gossip_interval_ms: int = 1_000
    # Phi above which the failure detector holds a peer down (8: ~1e-8 odds it is alive).
    phi_threshold: int = 8
    # A primary that has not acknowledged a write after this long gets a stand-in (sloppy
    # quorum); it may still answer, and whichever does counts.
    replica_timeout_ms: int = 1_000
    # How often held hints are offered to their primaries.
    hint_interval_ms: int = 1_000
    # Hints older than this are dropped (counted) instead of delivered; anti-entropy still
    # repairs what they carried. Also the least tombstone grace, so a late hint cannot
    # bring back a value whose tombstone was purged.
    hint_max_age_s: int = 86_400
    hint_max_bytes: int = 1 << 30
    # Pause between two anti-entropy exchanges (one partition with one peer each); 0 = off.
    anti_entropy_interval_ms: int = 200
    # How often ownership handoff and stray-data cleanup look for work.
    handoff_interval_ms: int = 1_000
    # Tombstones younger than this are kept even when every replica has them.
    tombstone_grace_s: int = 86_400 * 3
    # How often a node looks for tombstones to purge among keys it is the first primary of.
    tombstone_gc_interval_ms: int = 60_000

    def check(self) -> None:
        for name, low, high in (
            ("gossip_interval_ms", 10, 600_000),
            ("phi_threshold", 1, 1_000),
            ("replica_timeout_ms", 1, 600_000),
            ("hint_interval_ms", 10, 600_000),
            ("hint_max_age_s", 1, 10 * 365 * 86_400),
            ("hint_max_bytes", 0, 1 << 50),
            ("anti_entropy_interval_ms", 0, 3_600_000),
            ("handoff_interval_ms", 10, 600_000),
            ("tombstone_grace_s", 0, 10 * 365 * 86_400),
            ("tombstone_gc_interval_ms", 0, 86_400_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if self.tombstone_grace_s < self.hint_max_age_s:
            raise ConfigError(
                "tombstone_grace_s must be at least hint_max_age_s: a hint delivered after its"
                " key's tombstone was purged would bring the deleted value back"
            )


@dataclass(frozen=True, slots=True)
class Security:
    """TLS material and client credentials (kvstore.security makes and reads them).

    `tls_ca`/`tls_cert`/`tls_key` (PEM files): the cluster CA and this node's certificate,
    presented on both listeners and to peers; the cluster port then takes only peers and
    operators with certificates from that CA. `auth_tokens`: a file of client tokens (digests)
    with roles, checked on the client port. With no TLS a node binds loopback only, unless
    `insecure` says an open cluster is what is wanted (Redis's protected mode)."""

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    auth_tokens: str = ""
    # The client port requires a client certificate from the CA (its role then comes from
    # the certificate). Off, the client port takes tokens: gRPC's Python server either
    # requires client certificates or never asks for them, so one port cannot take both.
    client_certs: bool = False
    insecure: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca)

    def check(self, listens: Iterable[str]) -> None:
        given = [bool(self.tls_ca), bool(self.tls_cert), bool(self.tls_key)]
        if any(given) and not all(given):
            raise ConfigError("tls_ca, tls_cert and tls_key go together: give all three or none")
        if self.client_certs and not self.tls:
            raise ConfigError("client_certs needs TLS (tls_ca, tls_cert, tls_key)")
        if self.auth_tokens and not self.tls:
            raise ConfigError(
                "auth_tokens needs TLS (tls_ca, tls_cert, tls_key): a token sent in clear"
                " authenticates whoever reads it off the network"
            )
        if self.tls or self.insecure:
            return
        for address in listens:
            host = address.rpartition(":")[0].strip("[]")
            if not _is_loopback(host):
                raise ConfigError(
                    f"refusing to listen on {address} without TLS: anyone who can reach it"
                    " could read, write and reconfigure the cluster. Give tls_ca, tls_cert and"
                    " tls_key (kvstore certs makes them), or pass --insecure to serve an open"
                    " cluster on purpose"
                )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Where clients connect when client_listen is not given: the cluster port plus this.
CLIENT_PORT_OFFSET = 1000
# Where the metrics endpoint listens when metrics_listen is not given: the cluster port plus this.
METRICS_PORT_OFFSET = 2000
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    # The cluster address: peers and operators (the peer and admin APIs) connect here, and
    # it names the node in the ring (`advertise`).
    listen: str
    advertise: str
    data_dir: str
    seeds: tuple[str, ...]
    partitions: int = DEFAULT_PARTITIONS
    sync_writes: bool = False
    quorum: Quorum = field(default_factory=Quorum)
    limits: Limits = field(default_factory=Limits)
    background: Background = field(default_factory=Background)
    # A node not in its seeds asks to join the ring by itself once it has learned it (the
    # scalable nodes of a compose cluster); otherwise an operator runs `kvstore join`.
    auto_join: bool = False
    # Peer address -> the address to dial for it instead: a fault proxy in tests, or a
    # NAT/port-forward where a peer's advertised address is not directly reachable.
    peer_routes: tuple[tuple[str, str], ...] = ()
    # The client API's address (bound, and told to clients); by default the cluster
    # address's host with the port CLIENT_PORT_OFFSET higher.
    client_listen: str = ""
    client_advertise: str = ""
    security: Security = field(default_factory=Security)
    # The Prometheus endpoint (plain HTTP, GET /metrics); "" = off.
    metrics_listen: str = ""
    log_level: str = "info"
    log_format: str = "text"

    @property
    def members(self) -> tuple[str, ...]:
        """Every seed plus this node itself: the first ring's members when it bootstraps."""
        return tuple(sorted(set(self.seeds) | {self.advertise}))

    @property
    def bootstraps(self) -> bool:
        """A node listed in its own seeds (or given none) starts the cluster with the ring of
        `members`; one that is not is a newcomer that waits to be joined (`kvstore join`)."""
        return not self.seeds or self.advertise in self.seeds


_INT_SETTINGS = {
    "partitions",
    "n",
    "r",
    "w",
    "max_key_bytes",
    "max_value_bytes",
    "max_siblings",
    "max_clock_entries",
    "max_batch_items",
    "max_inflight_requests",
    "max_inflight_request_bytes",
    "max_connections",
    "connection_idle_ms",
    "request_timeout_ms",
    "max_request_timeout_ms",
    *(f.name for f in dataclasses.fields(Background)),
}
_BOOL_SETTINGS = {"sync_writes", "auto_join", "insecure", "client_certs"}
_STR_SETTINGS = {
    "node_id",
    "listen",
    "advertise",
    "data_dir",
    "client_listen",
    "client_advertise",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "auth_tokens",
    "metrics_listen",
    "log_level",
    "log_format",
}
SETTINGS = frozenset(_INT_SETTINGS | _BOOL_SETTINGS | _STR_SETTINGS | {"seeds", "peer_routes"})


def parse_address(text: str) -> str:
    """Validate HOST:PORT and return it normalised."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address must be HOST:PORT with a port in 1..65535, got {text!r}")
    return f"{host}:{int(port)}"


def _offset_port(address: str, offset: int, setting: str = "client_listen") -> str:
    host, _, port = address.rpartition(":")
    moved = int(port) + offset
    if moved >= 65536:
        raise ConfigError(
            f"no default {setting} for {address} (port + {offset} is past 65535): give {setting}"
        )
    return f"{host}:{moved}"


def parse_routes(value: Any, source: str) -> tuple[tuple[str, str], ...]:
    """`ADDR=VIA,ADDR=VIA` (or a TOML table {ADDR = VIA}) as sorted (peer, dial) pairs."""
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for item in filter(None, (part.strip() for part in value.split(","))):
            peer, sep, via = item.partition("=")
            if not sep:
                raise ConfigError(f"peer_routes from {source}: {item!r} is not ADDR=VIA")
            pairs.append((peer, via))
    else:
        raise ConfigError(f"peer_routes from {source} must be ADDR=VIA,... or a table")
    routes = {parse_address(peer): parse_address(via) for peer, via in pairs}
    if len(routes) != len(pairs):
        raise ConfigError(f"peer_routes from {source} names a peer twice")
    return tuple(sorted(routes.items()))


def _coerce(name: str, value: Any, source: str) -> Any:
    if name in _INT_SETTINGS:
        # Only an int or the text of one: a float (2.5 or even 3.0) is not silently
        # truncated, and a bool, though an int in Python, is not a number of anything.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{name} from {source} must be an integer, got {value!r}")
    if name in _BOOL_SETTINGS:
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} from {source} must be true or false, got {value!r}")
    if name == "seeds":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"seeds from {source} must be a list or a comma-separated string")
        return tuple(parse_address(str(s)) for s in items if str(s).strip())
    if name == "peer_routes":
        return parse_routes(value, source)
    if not isinstance(value, str):
        raise ConfigError(f"{name} from {source} must be a string, got {value!r}")
    return value


def _from_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - SETTINGS)
    if unknown:
        raise ConfigError(f"unknown settings in {path}: {', '.join(unknown)}")
    return {k: _coerce(k, v, path) for k, v in raw.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting in the environment: {var}")
        found[name] = _coerce(name, value, var)
    return found


def load_node_config(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Merge the sources (later wins) and validate the result as a whole."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(_from_file(config_file))
    merged.update(_from_env(env or {}))
    for name, value in (flags or {}).items():
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            merged[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return build_config(merged)


def _metrics_listen(given: str | None, listen: str) -> str:
    """The metrics address: HOST:PORT, "" or "off" to turn the endpoint off, and by default
    the cluster address's host with the port METRICS_PORT_OFFSET higher."""
    if given is None:
        return _offset_port(listen, METRICS_PORT_OFFSET, "metrics_listen")
    if given.strip().lower() in ("", "off"):
        return ""
    return parse_address(given)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    lowered = value.strip().lower()
    if lowered not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return lowered


def build_config(settings: Mapping[str, Any]) -> NodeConfig:
    listen = parse_address(settings.get("listen", "127.0.0.1:7101"))
    advertise = parse_address(settings.get("advertise", listen))
    if advertise.startswith(("0.0.0.0:", "[::]:")):
        raise ConfigError("advertise must be an address peers can reach, not a wildcard")
    node_id = settings.get("node_id", advertise)
    if not _NODE_ID.match(node_id):
        raise ConfigError(f"node_id must match {_NODE_ID.pattern}, got {node_id!r}")
    data_dir = settings.get("data_dir") or str(Path("data") / node_id.replace(":", "_"))
    client_listen = parse_address(
        settings.get("client_listen") or _offset_port(listen, CLIENT_PORT_OFFSET)
    )
    client_advertise = parse_address(
        settings.get("client_advertise")
        or f"{advertise.rpartition(':')[0]}:{client_listen.rpartition(':')[2]}"
    )
    if client_listen == listen:
        raise ConfigError("client_listen must differ from listen: the two APIs have two ports")
    metrics_listen = _metrics_listen(settings.get("metrics_listen"), listen)
    if metrics_listen in (listen, client_listen):
        raise ConfigError("metrics_listen must differ from listen and client_listen")
    log_level = _choice("log_level", settings.get("log_level", "info"), LOG_LEVELS)
    log_format = _choice("log_format", settings.get("log_format", "text"), LOG_FORMATS)
    security = Security(
        **{f.name: settings[f.name] for f in dataclasses.fields(Security) if f.name in settings}
    )
    security.check((listen, client_listen))
    quorum = Quorum(**{k: settings[k] for k in ("n", "r", "w") if k in settings})
    limit_names = {f.name for f in dataclasses.fields(Limits)}
    limits = Limits(**{k: v for k, v in settings.items() if k in limit_names})
    background_names = {f.name for f in dataclasses.fields(Background)}
    background = Background(**{k: v for k, v in settings.items() if k in background_names})
    quorum.check()
    limits.check()
    background.check()
    config = NodeConfig(
        node_id=node_id,
        listen=listen,
        advertise=advertise,
        data_dir=data_dir,
        seeds=tuple(settings.get("seeds", ())),
        partitions=settings.get("partitions", DEFAULT_PARTITIONS),
        sync_writes=settings.get("sync_writes", False),
        auto_join=settings.get("auto_join", False),
        peer_routes=settings.get("peer_routes", ()),
        client_listen=client_listen,
        client_advertise=client_advertise,
        security=security,
        quorum=quorum,
        limits=limits,
        background=background,
        metrics_listen=metrics_listen,
        log_level=log_level,
        log_format=log_format,
    )
    try:
        Ring(config.members, config.partitions, quorum.n)
    except RingError as exc:
        raise ConfigError(f"invalid ring: {exc}") from exc
    return config

"""The `kvstore` command: serve a node, run a local cluster, and get/put/delete keys."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from kvstore import __version__
from kvstore._pb import kvstore_pb2 as pb
from kvstore.client import TLS, Client, GetResult, PutResult
from kvstore.client._common import parse_seeds
from kvstore.config import SETTINGS, load_node_config, parse_address
from kvstore.errors import ConfigError, KvError
from kvstore.extras import missing_extra

# Where `kvstore local` puts its nodes: cluster ports 7101.., client ports 1000 higher.
DEFAULT_SEEDS = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103"
DEFAULT_NODE = "127.0.0.1:7101"


_NODE_HELP = (
    "HOST:PORT (cluster port) of the node to ask (default: the first of $KVSTORE_SEEDS,"
    " else 127.0.0.1:7101)"
)


def default_node() -> str:
    """The node admin commands ask when --node is not given: the first of this machine's
    node seeds ($KVSTORE_SEEDS, as a node's own settings give them: cluster addresses), or
    the local cluster's first node."""
    seeds = os.environ.get("KVSTORE_SEEDS", "")
    return parse_seeds(seeds)[0] if seeds.strip() else DEFAULT_NODE


_SWITCHES = {
    "sync_writes": "fsync the WAL once per group commit",
    "auto_join": "join the ring by itself once it has learned it",
    "insecure": "serve without TLS on addresses beyond loopback (an open cluster, on purpose)",
    "client_certs": "the client port requires client certificates from the CA (not tokens)",
}
_NODE_FLAGS = sorted(SETTINGS - set(_SWITCHES))


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run one node")
    p.add_argument("--config", help="TOML file of settings (KVSTORE_* env and flags override it)")
    for name in _NODE_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None)
    for name, help_text in _SWITCHES.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_const",
                       const=True, default=None, help=help_text)  # fmt: skip


def _add_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("local", help="run a cluster of node processes on this machine")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--base-port", type=int, default=7101)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data-dir", default="./data")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, no credentials (default: TLS, certificates and tokens under DATA_DIR/tls)",
    )


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds",
        default=os.environ.get("KVSTORE_CLIENT_SEEDS", DEFAULT_SEEDS),
        help="HOST:PORT,... of nodes' client ports (default: $KVSTORE_CLIENT_SEEDS or the"
        " local cluster's)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tls-ca", help="the cluster CA's PEM file (default: $KVSTORE_TLS_CA)")
    p.add_argument(
        "--tls-cert",
        help="a client certificate (PEM), for admin verbs (default: $KVSTORE_TLS_CERT)",
    )
    p.add_argument("--tls-key", help="its key (PEM) (default: $KVSTORE_TLS_KEY)")
    p.add_argument("--token", help="a bearer token for the client port (default: $KVSTORE_TOKEN)")
    p.add_argument(
        "--plaintext", action="store_true", help="no TLS (a node started without TLS material)"
    )


def _add_top(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("top", help="live request rates, errors, latency of nodes (metrics)")
    p.add_argument("--nodes", help="metrics HOST:PORTs, comma-separated (default: the local"
                   " cluster's 127.0.0.1:9101-9103)")  # fmt: skip
    p.add_argument("--interval", type=float, default=2.0, help="seconds between tables")
    p.add_argument("--count", type=int, default=0, help="tables to print, then exit (0: forever)")
    p.add_argument("--once", action="store_true", help="one table (--count 1)")


def _top(args: argparse.Namespace) -> int:
    from kvstore.cli import top

    nodes = (
        [parse_address(n) for n in args.nodes.split(",") if n.strip()]
        if args.nodes
        else list(top.DEFAULT_NODES)
    )
    count = 1 if args.once else args.count
    low, high = top.INTERVALS
    if not nodes or not low <= args.interval <= high or not 0 <= count <= top.MAX_COUNT:
        raise ConfigError(
            f"top needs nodes, --interval in {low}..{high} s and --count in 0..{top.MAX_COUNT}"
        )
    try:
        return top.run(nodes, args.interval, count)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvstore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_local(sub)
    _add_top(sub)

    get = sub.add_parser("get", help="read a key")
    get.add_argument("key")
    get.add_argument("--r", type=int)
    _add_client_options(get)

    put = sub.add_parser("put", help="write a key ('-' reads the value from stdin)")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--context", help="base64 context from a previous get or put")
    put.add_argument("--w", type=int)
    put.add_argument(
        "--return-body",
        action="store_true",
        help="also print the values after the write; the context printed then covers them",
    )
    _add_client_options(put)

    delete = sub.add_parser("delete", help="delete a key (writes a tombstone)")
    delete.add_argument("key")
    delete.add_argument("--context", help="base64 context from a previous get or put")
    delete.add_argument("--w", type=int)
    _add_client_options(delete)

    for name in ("get", "put", "delete"):
        sub.choices[name].add_argument(
            "--strict",
            action="store_true",
            help="count only the key's primaries (no fallbacks stand in for a down node)",
        )

    status = sub.add_parser("status", help="a node's view of the cluster")
    status.add_argument(
        "--node",
        help=_NODE_HELP,
    )
    _add_client_options(status)
    join = sub.add_parser("join", help="make a standby node (not in its seeds) join the ring")
    join.add_argument("--node", required=True, help="HOST:PORT of the node that joins")
    _add_client_options(join)
    leave = sub.add_parser("leave", help="make a node leave the ring, handing its data off")
    leave.add_argument("--node", required=True, help="HOST:PORT of the node that leaves")
    _add_client_options(leave)
    remove = sub.add_parser(
        "remove", help="take a dead member out of the ring (a live one should leave)"
    )
    remove.add_argument("address", help="HOST:PORT of the dead member")
    remove.add_argument("--node", help=_NODE_HELP)
    _add_client_options(remove)

    locate = sub.add_parser("locate", help="the nodes a key lives on (by a node's ring)")
    locate.add_argument("key")
    locate.add_argument(
        "--node",
        help=_NODE_HELP,
    )
    _add_client_options(locate)
    health = sub.add_parser(
        "health", help="exit 0 if the node answers SERVING (grpc.health.v1; for probes)"
    )
    health.add_argument(
        "--node",
        help=_NODE_HELP,
    )
    health.add_argument(
        "--service",
        default="",
        help="the service to ask about (default: the port as a whole; e.g. kvstore.v1.KV on"
        " a client port)",
    )
    _add_client_options(health)

    _add_drain_repair(sub)

    certs = sub.add_parser(
        "certs",
        help="make (or complete) a cluster's CA, node and client certificates and tokens",
        description="Idempotent: an existing CA in --dir is reused and only what is missing is"
        " issued. Prints new tokens once (the tokens file keeps digests only).",
    )
    certs.add_argument("--dir", required=True, help="where the material lives (keys are 0600)")
    certs.add_argument(
        "--node",
        action="append",
        default=[],
        help="HOST:PORT cluster address of a node to issue a certificate for (repeatable)",
    )
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name or IP the nodes are dialled by (repeatable; default 127.0.0.1 and"
        " localhost, plus each --node's host)",
    )
    certs.add_argument(
        "--client",
        action="append",
        default=[],
        help="NAME=ROLE: a client certificate (role read, write or admin; repeatable;"
        " default admin=admin)",
    )

    debug = sub.add_parser("debug", help="operator tools")
    debug_sub = debug.add_subparsers(dest="debug_command", required=True)
    local_get = debug_sub.add_parser("local-get", help="one node's own stored versions of a key")
    local_get.add_argument("key")
    local_get.add_argument("--node", required=True, help="HOST:PORT of the node to ask")
    _add_client_options(local_get)
    return parser


def _add_drain_repair(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drain = sub.add_parser(
        "drain",
        help="make a node stop taking client requests, finish those in flight, deliver its"
        " hints, then stop (a preStop hook: before a restart, not a leave)",
    )
    drain.add_argument("--node", help=_NODE_HELP)
    drain.add_argument(
        "--stay", action="store_true", help="do not stop the node once drained (it stays"
        " out of client traffic until it is restarted)"
    )  # fmt: skip
    drain.add_argument(
        "--drain-timeout",
        type=float,
        default=0.0,
        help="seconds for the drain in all (default 0: the node's, 10 s)",
    )
    _add_client_options(drain)
    repair = sub.add_parser(
        "repair",
        help="run anti-entropy now between a node and the other replicas of its partitions",
    )
    repair.add_argument("--node", help=_NODE_HELP)
    repair.add_argument(
        "--partition",
        type=int,
        action="append",
        default=[],
        help="a partition to repair (repeatable; default: every one the node holds)",
    )
    repair.add_argument(
        "--repair-timeout",
        type=float,
        default=0.0,
        help="seconds for the repair in all (default 0: the node's, 60 s)",
    )
    _add_client_options(repair)


def _drain_repair(kv: Client, args: argparse.Namespace) -> int:
    node = args.node or default_node()
    answer: pb.DrainResponse | pb.RepairResponse
    if args.command == "drain":
        answer = kv.drain(node, args.drain_timeout, args.stay)
        ok = answer.hints_left == 0
        text = (
            f"drained {node}: {answer.hints_delivered} hints delivered,"
            f" {answer.hints_left} left; {'stopping' if answer.exiting else 'staying up'}"
        )
    else:
        answer = kv.repair(node, args.partition, args.repair_timeout)
        ok = answer.failed == 0
        text = "\n".join(
            [
                f"repaired {node}: {answer.partitions} partitions, {answer.exchanges} exchanges"
                f" ({answer.failed} failed), {answer.keys_repaired} records merged",
                *(f"  failed: {error}" for error in answer.errors),
            ]
        )
    if args.json:
        text = json.dumps(
            MessageToDict(
                answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        )
    print(text)
    return 0 if ok else 1


def _decode_context(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SystemExit(
            "kvstore: --context must be the base64 text a get or put printed"
        ) from None


def _show_value(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return repr(value)


def _print_get(result: GetResult, as_json: bool) -> int:
    context = base64.b64encode(result.context).decode()
    if as_json:
        values = [base64.b64encode(v).decode() for v in result.values]
        print(json.dumps({"found": result.found, "values_b64": values, "context": context}))
    elif not result.found:
        print("(not found)")
        if result.context:
            print(f"context: {context}")
    else:
        for value in result.values:
            print(_show_value(value))
        print(f"context: {context}")
    return 0 if result.found else 1


def _print_put(result: PutResult, as_json: bool, with_body: bool) -> int:
    context = base64.b64encode(result.context).decode()
    if as_json:
        answer: dict[str, Any] = {"context": context}
        if with_body:
            answer["values_b64"] = [base64.b64encode(v).decode() for v in result.values]
        print(json.dumps(answer))
        return 0
    print("ok")
    if with_body:
        for value in result.values:
            print(_show_value(value))
    print(f"context: {context}")
    return 0


def _print_status(status: pb.StatusResponse, as_json: bool) -> int:
    if as_json:
        print(json.dumps(MessageToDict(status, preserving_proto_field_name=True)))
        return 0
    pending = " (partitions moving)" if status.ring_pending else ""
    print(f"node {status.node_id} at {status.address}: ring epoch {status.ring_epoch}{pending}")
    print(f"{'address':<24} {'node id':<16} {'status':<8} {'up':<4} {'phi':>6} {'owns':>5}"
          f" {'will own':>8}")  # fmt: skip
    for m in status.members:
        future = str(m.partitions_pending) if status.ring_pending else "-"
        print(f"{m.address:<24} {m.node_id:<16} {m.status:<8} {'yes' if m.up else 'NO':<4}"
              f" {m.phi:>6.1f} {m.partitions_owned:>5} {future:>8}")  # fmt: skip
    print(f"hints pending: {status.hints_pending} ({status.hint_bytes} bytes)")
    print(f"partitions to pull (handoff): {status.handoffs_pending}")
    for name, value in sorted(status.counters.items()):
        print(f"  {name}: {value}")
    return 0


def _client_command(args: argparse.Namespace) -> int:
    with Client(args.seeds, timeout=args.timeout, tls=_tls(args), token=args.token) as kv:
        if args.command == "status":
            node = args.node or default_node()
            return _print_status(kv.status(node), args.json)
        if args.command in ("join", "leave"):
            (kv.join if args.command == "join" else kv.leave)(args.node)
            print(f"ok: {args.node} asked to {args.command}; watch `kvstore status`")
            return 0
        if args.command == "locate":
            where = kv.locate(args.node or default_node(), args.key)
            if args.json:
                print(json.dumps(MessageToDict(where, preserving_proto_field_name=True)))
            else:
                print(f"ring epoch {where.ring_epoch}: {' '.join(where.primaries)}")
                if where.pending_primaries:
                    print(f"after the pending change: {' '.join(where.pending_primaries)}")
            return 0
        if args.command in ("drain", "repair"):
            return _drain_repair(kv, args)
        if args.command == "health":
            serving = kv.health(args.node or default_node(), args.service)
            print(serving)
            return 0 if serving == "SERVING" else 1
        if args.command == "remove":
            kv.remove(args.address, via=args.node or default_node())
            print(f"ok: {args.address} is being removed; watch `kvstore status`")
            return 0
        if args.command == "get":
            return _print_get(kv.get(args.key, r=args.r, sloppy=not args.strict), args.json)
        if args.command == "debug":
            return _print_get(kv.local_get(args.node, args.key), args.json)
        context = _decode_context(args.context)
        if args.command == "put":
            value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
            result = kv.put(
                args.key,
                value,
                context=context,
                w=args.w,
                sloppy=not args.strict,
                return_body=args.return_body,
            )
        else:
            result = kv.delete(args.key, context=context, w=args.w, sloppy=not args.strict)
        return _print_put(result, args.json, args.command == "put" and args.return_body)


def _tls(args: argparse.Namespace) -> TLS | bool | None:
    """The flags' TLS, else None (the client reads KVSTORE_TLS_*), or False (--plaintext)."""
    if args.plaintext:
        return False
    ca = args.tls_ca or os.environ.get("KVSTORE_TLS_CA")
    if not ca:
        return None
    cert = args.tls_cert or os.environ.get("KVSTORE_TLS_CERT", "")
    key = args.tls_key or os.environ.get("KVSTORE_TLS_KEY", "")
    return TLS(ca, cert, key)


def _serve(args: argparse.Namespace) -> int:
    from kvstore.node import logs
    from kvstore.node.server import run

    flags: dict[str, Any] = {name: getattr(args, name) for name in SETTINGS}
    config = load_node_config(args.config, os.environ, flags)
    logs.configure(config.log_level, config.log_format)
    print(f"starting pid={os.getpid()} node={config.node_id}", flush=True)
    return run(config)


def _local(args: argparse.Namespace) -> int:
    from kvstore.node.local_cluster import ClusterError, LocalCluster

    tls_dir = None if args.insecure else Path(args.data_dir) / "tls"
    cluster = LocalCluster(
        args.nodes, args.data_dir, base_port=args.base_port, host=args.host, tls_dir=tls_dir
    )
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Handled explicitly: a shell may start us with SIGINT ignored, and Ctrl-C in a terminal
    # reaches the nodes too, which must then read as "stopping", not "a node died".
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        cluster.start()
        print(f"kvstore: {args.nodes} nodes running (data under {cluster.data_dir})")
        for node in cluster.nodes:
            print(
                f"  {node.node_id}  clients {node.client_address}  cluster {node.address}"
                f"  metrics {node.metrics_address}  pid {node.pid}  log {node.log_path}"
            )
        if cluster.tls is not None:
            env_file = cluster.tls.directory / "client.env"
            env = cluster.client_credentials()
            _write_private(env_file, "".join(f"export {k}={v}\n" for k, v in env.items()))
            print(f"secure: TLS, certificates and tokens under {cluster.tls.directory}.")
            print(f"For the CLI and clients (admin identity):  source {env_file}")
        else:
            print("insecure: plaintext on loopback (--insecure).")
        print(f"try:  kvstore put hello world --seeds {cluster.seeds}")
        print(f"      kvstore get hello --seeds {cluster.seeds}")
        print(f"      kvstore status --node {cluster.addresses[0]}")
        print("      kvstore top --nodes " + ",".join(n.metrics_address for n in cluster.nodes))
        print("Ctrl-C stops the cluster.", flush=True)
        while not stopping:
            time.sleep(0.5)
            for node in cluster.nodes:
                if not node.running and not stopping:
                    print(f"kvstore: {node.node_id} exited:\n{cluster.log_tail(node.index)}")
                    return 1
    except ClusterError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nkvstore: stopping nodes...", flush=True)
        cluster.stop()
        print("kvstore: stopped.")
    return 0


def _certs(args: argparse.Namespace) -> int:
    from kvstore.security import write_cluster_material

    clients = (
        dict(item.split("=", 1) for item in args.client) if args.client else {"admin": "admin"}
    )
    hosts = sorted(
        {*(args.host or ("127.0.0.1", "localhost")), *(n.rpartition(":")[0] for n in args.node)}
    )
    material = write_cluster_material(args.dir, args.node, hosts, clients)
    print(f"CA: {material.ca}")
    for node in args.node:
        cert, key = material.node_cert(node), material.node_key(node)
        print(f"node {node}: --tls-cert {cert} --tls-key {key}")
    for name in clients:
        print(f"client {name}: {material.client_cert(name)} {material.client_key(name)}")
    print(f"tokens (digests, for --auth-tokens): {material.tokens_file}")
    for role, token in material.tokens.items():
        print(f"new {role} token (shown once): {token}")
    return 0


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


# The node's packages come with the [server] extra, which a client-only install lacks.
SERVER_COMMANDS = frozenset({"serve", "local", "certs", "top"})  # top parses metrics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in SERVER_COMMANDS and (problem := missing_extra("server")):
        print(f"kvstore {args.command}: {problem}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "local":
            return _local(args)
        if args.command == "certs":
            return _certs(args)
        if args.command == "top":
            return _top(args)
        return _client_command(args)
    except KvError as exc:
        print(f"kvstore: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

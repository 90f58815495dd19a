#!/usr/bin/env python3
"""One node of five paused (SIGSTOP: a long GC pause, a frozen VM) under a sequential write
load, as issue 16 measured it: a Client given all five client addresses, PUTS puts with W=2,
first on the healthy cluster, then with one node paused. Prints failed puts and throughput of
both phases as one JSON line.

    .venv/bin/python bench/paused_node.py [PUTS] [unhedged-writes]     # default 200

`unhedged-writes` gives the client HedgePolicy(writes=False) (writes are hedged by default
since issue 16). Otherwise it uses only the Client API every version has (Client(seeds,
timeout=, tls=False), put(w=)), so the same script measures an older checkout (run it with
that checkout's venv from its own directory) beside this one. Nodes are plaintext on
loopback, in a temporary folder, and stopped by pid at the end.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time

from kvstore.client import Client
from kvstore.errors import KvError
from kvstore.node.local_cluster import LocalCluster, free_ports

NODES = 5
VICTIM = 2
TIMEOUT_S = 5.0


def phase(kv: Client, name: str, puts: int) -> dict[str, float]:
    failed = 0
    start = time.monotonic()
    for i in range(puts):
        try:
            kv.put(f"{name}-{i}", b"x" * 100, w=2)
        except KvError as exc:
            failed += 1
            print(f"{name} put {i} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    elapsed = time.monotonic() - start
    return {"puts": puts, "failed": failed, "seconds": round(elapsed, 2),
            "ops_per_s": round(puts / elapsed, 1)}  # fmt: skip


def settle(kv: Client) -> None:
    """Until every node is active with its client address known (gossip spreads them in the
    first seconds of a cluster): the pause is measured on a running cluster, not one being
    formed, where a client that does not know a key's replicas yet sends its write to a node
    that forwards it, and a forward to the paused node is not hedged. (An older checkout's
    client has no topology: it only waits a few seconds.)"""
    topology = getattr(kv, "topology", None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if topology is None:
            time.sleep(3)
            return
        members = topology().members
        if sum(1 for m in members if m.status == "active" and m.client_address) == NODES:
            return
        time.sleep(0.2)
    raise SystemExit("the cluster did not settle within 30 s")


def main() -> int:
    puts = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    options: dict[str, object] = {}
    if "unhedged-writes" in sys.argv[2:]:
        from kvstore.client import HedgePolicy

        options["hedge"] = HedgePolicy(writes=False)
    with tempfile.TemporaryDirectory(prefix="kvstore-paused-") as data:
        cluster = LocalCluster(NODES, data, ports=free_ports(NODES))
        cluster.start()
        try:
            with Client(cluster.client_addresses, timeout=TIMEOUT_S, tls=False, **options) as kv:
                settle(kv)
                phase(kv, "warm", 50)
                healthy = phase(kv, "healthy", puts)
                cluster.signal_node(VICTIM, signal.SIGSTOP)
                try:
                    paused = phase(kv, "paused", puts)
                finally:
                    cluster.signal_node(VICTIM, signal.SIGCONT)
        finally:
            cluster.stop()
    ratio = paused["ops_per_s"] / healthy["ops_per_s"]
    print(json.dumps({"healthy": healthy, "paused": paused, "paused_vs_healthy": round(ratio, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

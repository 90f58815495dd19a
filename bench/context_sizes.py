"""How large causal contexts are in the common cases, exact put contexts beside the replica's
whole clock (what a put returned before contexts were exact, and what return_body returns).

    .venv/bin/python bench/context_sizes.py [--rounds 30]

Starts its own 3-node cluster (N=3 R=2 W=2) on free ports in a temporary folder and runs, on
fresh keys: one writer chaining its put contexts; three writers, each bound to its own node,
chaining their put contexts in turn without reading (every put leaves the other two
writers' siblings unseen; their dots top their actors' entries, so the entries shrink
instead of holes appearing); the same three through one node (one actor: the unseen
siblings' dots sit under the writer's own, as holes, the most an honest context carries);
and three writers that read before each write. Prints the bytes of each context, its
vector entries and holes, and stops every process it started.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable

from kvstore import Client
from kvstore.node.local_cluster import LocalCluster, free_ports
from kvstore.storage.codec import decode_context

Sizes = dict[str, list[int]]


def measure(sizes: Sizes, name: str, key: str, context: bytes) -> None:
    clock = decode_context(context, key.encode())
    sizes.setdefault(f"{name} bytes", []).append(len(context))
    sizes.setdefault(f"{name} entries", []).append(len(clock.vector))
    sizes.setdefault(f"{name} holes", []).append(len(clock.holes))


def one_writer(clients: list[Client], addresses: list[str], rounds: int) -> Sizes:
    key, sizes = f"one-{os.urandom(4).hex()}", {}
    context = None
    for n in range(rounds):
        exact = clients[0].put(key, b"v%d" % n, context=context)
        measure(sizes, "put context", key, exact.context)
        whole = clients[0].put(key, b"w%d" % n, context=exact.context, return_body=True)
        measure(sizes, "whole clock", key, whole.context)
        context = whole.context
    return sizes


def three_chaining(clients: list[Client], addresses: list[str], rounds: int) -> Sizes:
    return chaining(clients, addresses, rounds)


def three_chaining_one_node(clients: list[Client], addresses: list[str], rounds: int) -> Sizes:
    return chaining(clients[:1] * 3, addresses[:1] * 3, rounds)


def chaining(clients: list[Client], addresses: list[str], rounds: int) -> Sizes:
    """Three writers taking turns, each carrying only its own last put context."""
    key, sizes = f"chain-{os.urandom(4).hex()}", {}
    contexts: list[bytes | None] = [None, None, None]
    for n in range(rounds):
        for w, kv in enumerate(clients):
            put = kv.put(key, b"w%d-%d" % (w, n), context=contexts[w])
            contexts[w] = put.context
            measure(sizes, "put context", key, put.context)
            # What the put returned before contexts were exact: its coordinator's clock.
            measure(sizes, "whole clock", key, kv.local_get(addresses[w], key).context)
    return sizes


def three_reading(clients: list[Client], addresses: list[str], rounds: int) -> Sizes:
    key, sizes = f"read-{os.urandom(4).hex()}", {}
    for n in range(rounds):
        for w, kv in enumerate(clients):
            read = kv.get(key)
            put = kv.put(key, b"w%d-%d" % (w, n), context=read.context or None)
            measure(sizes, "get context", key, read.context or put.context)
            measure(sizes, "put context", key, put.context)
    return sizes


CASES: dict[str, Callable[[list[Client], list[str], int], Sizes]] = {
    "one writer, chaining put contexts": one_writer,
    "three writers on three nodes, chaining put contexts": three_chaining,
    "three writers through one node, chaining put contexts": three_chaining_one_node,
    "three writers on three nodes, reading before each write": three_reading,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalCluster(3, folder, ports=free_ports(3)) as cluster,
    ):
        cluster.start()
        clients = [Client(address) for address in cluster.addresses]
        try:
            print("| case | context | bytes mean / max | vector entries max | holes max |")
            print("|---|---|---|---|---|")
            for name, case in CASES.items():
                sizes = case(clients, cluster.addresses, args.rounds)
                for context in dict.fromkeys(k.rsplit(" ", 1)[0] for k in sizes):
                    size = sizes[f"{context} bytes"]
                    print(
                        f"| {name} | {context} | {statistics.mean(size):.0f} / {max(size)}"
                        f" | {max(sizes[f'{context} entries'])}"
                        f" | {max(sizes[f'{context} holes'])} |"
                    )
        finally:
            for kv in clients:
                kv.close()


if __name__ == "__main__":
    main()

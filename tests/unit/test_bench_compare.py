"""bench/compare's parts that need no servers: choosing stores, who goes first, the table with
three stores and its ratios, and the machine's-floor section."""

from __future__ import annotations

import argparse
import math

import pytest

from kvstore.bench import compare, floor


def row(ops_s: float, read: tuple[float, float], update: tuple[float, float],
        cpu: dict[str, float], not_found: int = 0) -> dict[str, object]:  # fmt: skip
    return {
        "ops_s": ops_s, "errors": 0, "not_found": not_found,
        "latency_ms": {"read": read, "update": update}, "cpu_us_per_op": cpu,
        "server_cpu_us_per_op": sum(v for k, v in cpu.items() if k != "client"),
    }  # fmt: skip


ROWS = {
    "a": {
        "kvstore": row(500, (80.0, 200.0), (100.0, 300.0),
                       {"client": 500, "node-0": 1000, "node-1": 1000, "node-2": 1000}),
        "redis": row(4000, (10.0, 20.0), (20.0, 40.0),
                     {"client": 250, "redis-primary": 30, "redis-replica-1": 10}),
        "etcd": row(2000, (20.0, 50.0), (25.0, 100.0),
                    {"client": 250, "etcd-0": 300, "etcd-1": 200, "etcd-2": 100}, not_found=3),
    }
}  # fmt: skip


def args(*argv: str) -> argparse.Namespace:
    return compare.parse_args(list(argv))


def test_all_three_stores_by_default_in_the_tables_order() -> None:
    assert args().stores == ["kvstore", "redis", "etcd"]
    assert args("--stores", "etcd, kvstore").stores == ["kvstore", "etcd"]
    # A second kvstore cluster with sync_writes, only when asked for.
    assert args("--stores", "redis,kvstore-sync,kvstore").stores == [
        "kvstore",
        "kvstore-sync",
        "redis",
    ]
    assert args().no_floor is False and args("--no-floor").no_floor is True


@pytest.mark.parametrize("stores", ["", "kvstore,mongo", "redis,redis", ","])
def test_unknown_repeated_or_no_stores_are_refused(stores: str) -> None:
    with pytest.raises(SystemExit) as refused:
        args("--stores", stores)
    assert refused.value.code == 2


def test_who_goes_first_rotates_between_repeats() -> None:
    three = ["kvstore", "redis", "etcd"]
    orders = [compare.run_order(three, attempt) for attempt in range(3)]
    assert [order[0] for order in orders] == three  # each store goes first once
    assert all(sorted(order) == sorted(three) for order in orders)
    # Two stores alternate, as bench/compare always did.
    assert compare.run_order(["kvstore", "redis"], 1) == ["redis", "kvstore"]


def test_the_table_shows_every_store_and_kvstores_ratios_to_each() -> None:
    text = compare.table(ROWS, args("--workloads", "a")).splitlines()
    rows = [line for line in text if line.startswith("| A | ")]
    store_rows = [line for line in rows if line.split(" | ")[1] in compare.STORES]
    assert [line.split(" | ")[1] for line in store_rows] == ["kvstore", "redis", "etcd"]
    etcd = store_rows[2].split(" | ")
    # ops/s, latency, errors, not found, client CPU, servers summed, each server
    assert etcd[2:9] == ["2000", "read: 20.0 / 50.0; update: 25.0 / 100.0", "0", "3", "250",
                         "600", "etcd-0 300, etcd-1 200, etcd-2 100 |"]  # fmt: skip
    ratio_rows = [line for line in rows if line not in store_rows]
    # kvstore / Redis, then kvstore / etcd: throughput, p50s, p99s, client CPU, server CPU
    assert ratio_rows == [
        "| A | 0.12 | read 8.00; update 5.00 | read 10.00; update 7.50 | 2.00 | 75.00 |",
        "| A | 0.25 | read 4.00; update 4.00 | read 4.00; update 3.00 | 2.00 | 5.00 |",
    ]
    assert any("kvstore / Redis" in line for line in text)
    assert any("kvstore / etcd" in line for line in text)
    assert any("etcd: 3 members (Raft, fsync on every commit" in line for line in text)


def test_a_subset_shows_only_its_stores_and_ratios() -> None:
    text = compare.table(ROWS, args("--stores", "kvstore,etcd"))
    assert "| A | redis |" not in text and "kvstore / Redis" not in text
    assert "| A | etcd |" in text and "kvstore / etcd" in text
    without_kvstore = compare.table(ROWS, args("--stores", "redis,etcd"))
    assert "Ratios" not in without_kvstore and "| A | redis |" in without_kvstore


def test_a_headline_counts_not_found_apart_from_errors() -> None:
    document = {
        "throughput": 100.0, "errors": {"Timeout": 2}, "not_found": {"read": 4, "update": 0},
        "operations": {"read": {"p50_ms": 1.0, "p99_ms": 2.0}},
        "cpu_us_per_op": {"client": 10.0, "etcd-0": 5.0},
    }  # fmt: skip
    headline = compare.headline(document)
    assert headline["errors"] == 2 and headline["not_found"] == 4
    assert headline["server_cpu_us_per_op"] == 5.0


def test_the_floor_section_gives_each_lone_operation_as_a_multiple_of_the_echo() -> None:
    result = floor.with_ratios({
        "echo": {"count": 3000, "p50_ms": 0.5, "p99_ms": 1.5},
        "kvstore": {
            "async": {"get": {"count": 300, "p50_ms": 0.9, "p99_ms": 2.0},
                      "put": {"count": 300, "p50_ms": 3.0, "p99_ms": 6.0}},
            "sync": {"get": {"count": 200, "p50_ms": 1.0, "p99_ms": 2.5},
                     "put": {"count": 200, "p50_ms": 2.5, "p99_ms": 5.0}},
        },
    })  # fmt: skip
    assert result["kvstore"]["async"]["put"]["p50_over_echo_p50"] == pytest.approx(6.0)
    text = floor.section(result, duration=3.0)
    assert "## The machine's floor" in text and "p50 0.500 ms, p99 1.500 ms" in text
    lines = [line for line in text.splitlines() if line.startswith("| kvstore ")]
    cells = [line.rstrip(" |").split(" | ") for line in lines]
    assert [[c[1], c[5], c[6]] for c in cells] == [
        ["get", "1.80", "yes"], ["put", "6.00", "no"], ["get", "2.00", "yes"],
        ["put", "5.00", "no"],
    ]  # fmt: skip
    assert "AsyncClient" in lines[0] and "Client (sync" in lines[2]


def test_the_floor_section_without_kvstore_is_the_echo_alone() -> None:
    result = floor.with_ratios({"echo": {"count": 10, "p50_ms": 0.0, "p99_ms": 0.0}})
    text = floor.section(result, duration=1.0)
    assert "p50 0.000 ms" in text and "| kvstore" not in text
    broken = floor.with_ratios({"echo": {"count": 1, "p50_ms": 0.0, "p99_ms": 0.0},
                                "kvstore": {"sync": {"get": {"count": 1, "p50_ms": 1.0,
                                                             "p99_ms": 1.0}}}})  # fmt: skip
    assert math.isnan(broken["kvstore"]["sync"]["get"]["p50_over_echo_p50"])

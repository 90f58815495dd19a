"""CPU per operation: this process's and watched servers', over the recorded part only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kvstore.bench.cpu import CLIENT, CpuProbe, parse_server_pids, process_cpu_seconds
from kvstore.bench.runner import LoadShape, PhaseResult, run_phase
from tests.unit.test_bench_runner import MemoryStore, chooser

BURN = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass"


@pytest.fixture
def burner() -> Iterator[int]:
    """A child process that spins on one core for at most 20 s; stopped by its pid."""
    process = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_watched_server_is_charged_only_for_the_recorded_time(burner: int) -> None:
    probe = CpuProbe({"burner": burner})
    shape = LoadShape(concurrency=1, ops=None, duration=0.6, warmup=0.6)
    store = MemoryStore(service_time=0.001)
    result = asyncio.run(run_phase(store, chooser("c"), shape, b"v", cpu=probe))
    # It spins the whole 1.2 s (less what the other core's work takes from it); only the
    # 0.6 s after the warm-up count. /proc counts in 10 ms ticks.
    assert 0.2 <= result.cpu_s["burner"] <= 0.7
    assert result.cpu_s[CLIENT] > 0
    per_op = result.cpu_us_per_op()
    assert per_op["burner"] == pytest.approx(result.cpu_s["burner"] * 1e6 / result.completed)


def test_process_cpu_reads_proc(burner: int) -> None:
    first = process_cpu_seconds(burner)
    asyncio.run(asyncio.sleep(0.3))
    assert process_cpu_seconds(burner) > first
    with pytest.raises(FileNotFoundError):
        process_cpu_seconds(2**22 + 12345)  # above pid_max's default: never a process


def test_client_cpu_adds_up_across_processes_and_servers_come_from_one() -> None:
    one = PhaseResult(completed=10, cpu_s={"client": 0.5, "node-0": 1.0})
    two = PhaseResult(completed=10, cpu_s={"client": 0.25})
    one.merge(PhaseResult.decode(two.encode()))
    assert one.cpu_s == {"client": 0.75, "node-0": 1.0}
    assert one.cpu_us_per_op() == {"client": 37500.0, "node-0": 50000.0}


@pytest.mark.parametrize(
    ("specs", "expected"),
    [(["node-0=12", "redis=13"], {"node-0": 12, "redis": 13}), (["77"], {"pid-77": 77}), ([], {})],
)
def test_server_pids_parse(specs: list[str], expected: dict[str, int]) -> None:
    assert parse_server_pids(specs) == expected


@pytest.mark.parametrize("specs", [["a=x"], ["a=0"], ["a=1", "a=2"], ["client=5"], ["a="]])
def test_bad_server_pids_are_refused(specs: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_server_pids(specs)

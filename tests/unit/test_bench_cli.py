"""kvbench's command line on an in-memory store: the rate sweep's latency-at-load curve,
refusals of bad options (exit 2, nothing run), and the charts drawn from its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvstore.bench import cli
from tests.unit.test_bench_runner import MemoryStore


class SlowStore(MemoryStore):
    """Answers in 10 ms: one task serves at most ~100 ops/s."""

    default_seeds = "memory"
    runs = 0

    def __init__(self, seeds: str, r: int | None, w: int | None, timeout: float) -> None:
        super().__init__(service_time=0.01)
        SlowStore.runs += 1


@pytest.fixture(autouse=True)
def memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.STORES, "memory", SlowStore)  # type: ignore[arg-type]
    SlowStore.runs = 0


def test_rate_sweep_shows_latency_rising_past_capacity(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    status = cli.main(
        ["run", "--store", "memory", "--workload", "c", "--records", "100", "--ops", "60",
         "--concurrency", "1", "--rate-sweep", "30,300", "--json", str(out), "--quiet"]
    )  # fmt: skip
    assert status == 0
    steps = json.loads(out.read_text())["sweep"]
    assert [s["config"]["target_rate"] for s in steps] == [30.0, 300.0]
    below, above = (s["operations"]["read"] for s in steps)
    assert below["p50_ms"] < 30  # under capacity: about the service time
    # At 300/s one task falls behind by ~7 ms per operation: the 30th waits ~200 ms.
    assert above["p50_ms"] > 100 and above["max_ms"] > 300
    assert steps[1]["throughput"] < 120  # capacity, not the target


@pytest.mark.parametrize(
    "extra",
    [["--rate-sweep", "10,-5"], ["--rate-sweep", "fast"], ["--rate-sweep", "10", "--target-rate",
     "10"], ["--ops", "5", "--duration", "1"], ["--processes", "0"], ["--read", "0.5"],
     ["--server-pid", "x=y"], ["--batch", "4"]],
)  # fmt: skip
def test_bad_options_exit_2_before_anything_runs(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--store", "memory", "--workload", "c", *extra]) == 2
    assert capsys.readouterr().err.startswith("kvbench: ")
    assert SlowStore.runs == 0


def test_plot_draws_every_chart_the_results_hold(tmp_path: Path) -> None:
    single, sweep = tmp_path / "a.json", tmp_path / "sweep.json"
    args = ["--store", "memory", "--records", "50", "--concurrency", "2", "--quiet"]
    assert cli.main(["run", "--workload", "a", "--ops", "40", "--json", str(single), *args]) == 0
    assert cli.main(["run", "--workload", "c", "--ops", "20", "--rate-sweep", "50,100",
                     "--json", str(sweep), *args]) == 0  # fmt: skip
    charts = tmp_path / "charts"
    assert cli.main(["plot", str(single), str(sweep), "--out", str(charts)]) == 0
    names = {p.name for p in charts.iterdir()}
    assert names == {"throughput.png", "latency_percentiles.png", "latency_at_load.png"}
    for png in charts.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_of_nothing_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    assert cli.main(["plot", str(missing), "--out", str(tmp_path)]) == 2

"""PNG charts from kvbench's JSON results: throughput over time, latency by percentile, and
the latency-at-load curve of a rate sweep. Several result files go on the same axes, so two
stores measured in one run are read side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("kvbench plot needs matplotlib: pip install 'kvstore-dynamo[plot]'") from None

Document = Mapping[str, Any]


def _runs(document: Document) -> list[Document]:
    sweep = document.get("sweep")
    return list(sweep) if isinstance(sweep, list) else [document]


def _label(document: Document, name: str) -> str:
    config = document.get("config", {})
    return f"{name} ({config.get('store', '?')}, {config.get('workload', '?')})"


def _nines(percentile: float) -> float:
    """x position for a percentile: 1 for 90, 2 for 99, 3 for 99.9 (HdrHistogram's axis)."""
    return 1.0 / max(1.0 - percentile / 100.0, 1e-5)


def draw(documents: Sequence[Document], names: Sequence[str], out: Path) -> list[Path]:
    """Write the charts the documents have data for; return the files written."""
    if len(documents) != len(names):
        raise ValueError("one name per document")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    single = [(d, n) for d, n in zip(documents, names, strict=True) if "sweep" not in d]
    sweeps = [(d, n) for d, n in zip(documents, names, strict=True) if "sweep" in d]

    if single:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for document, name in single:
            # The last second is partial: drawing it would show a drop that never happened.
            series = document.get("per_second", [])[: max(int(document.get("elapsed_s", 0)), 1)]
            ax.plot(range(len(series)), series, label=_label(document, name))
        ax.set(xlabel="second", ylabel="operations completed", title="Throughput over time")
        ax.legend(fontsize="small")
        written.append(_save(fig, out / "throughput.png"))

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for document, name in single:
            for op, points in sorted(document.get("latency_curve", {}).items()):
                if points:
                    xs = [_nines(p) for p, _ in points]
                    ax.plot(xs, [ms for _, ms in points], marker=".", label=f"{op}: {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [0.0, 90.0, 99.0, 99.9, 99.99, 100.0]
        ax.set_xticks([_nines(p) for p in ticks], [f"{p:g}%" for p in ticks[:-1]] + ["max"])
        ax.set(xlabel="percentile", ylabel="latency (ms)", title="Latency by percentile")
        ax.legend(fontsize="small")
        written.append(_save(fig, out / "latency_percentiles.png"))

    if sweeps:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for document, name in sweeps:
            runs = _runs(document)
            ops = sorted({op for run in runs for op in run.get("operations", {})})
            for op in ops:
                for key, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
                    # Against the offered rate: past saturation the achieved rate stalls or
                    # falls, and the curve would fold back on itself.
                    xs = [run["config"]["target_rate"] for run in runs if op in run["operations"]]
                    ys = [run["operations"][op][key] for run in runs if op in run["operations"]]
                    ax.plot(xs, ys, style, label=f"{op} {key[:-3]}: {_label(runs[0], name)}")
        ax.set_yscale("log")
        ax.set(
            xlabel="offered load (target ops/s, open loop)",
            ylabel="latency from intended start (ms)",
            title="Latency at load",
        )
        ax.legend(fontsize="small")
        written.append(_save(fig, out / "latency_at_load.png"))
    if not written:
        raise ValueError("no results to plot")
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

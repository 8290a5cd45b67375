"""The two figures of the report, drawn with matplotlib's Agg canvas (no display needed)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.latency import ROWS_PER_REQUEST
from benchmarks.report import model_title
from benchmarks.servers import SERVER_NAMES
from benchmarks.targets import http_figure, short_count

SERVER_STYLES = {"floor": ("tab:gray", "s"), "textbook": ("tab:orange", "^"), "predictq": ("tab:blue", "o")}


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


def latency_plot(models: dict[str, dict], path: Path) -> Path:
    """p50 latency at 1 connection against rows per request, one panel per model."""
    figure = Figure(figsize=(5.2 * len(models), 4.2), layout="constrained")
    axes = figure.subplots(1, len(models), squeeze=False)[0]
    for ax, (label, model) in zip(axes, models.items(), strict=True):
        for server in SERVER_NAMES:
            points = [(rows, http_figure(model, server, rows, 1, "p50_ms")) for rows in ROWS_PER_REQUEST]
            points = [(rows, p50) for rows, p50 in points if p50 is not None]
            if points:
                colour, marker = SERVER_STYLES[server]
                ax.plot(*zip(*points, strict=True), marker=marker, color=colour, label=server)
        ax.set(xscale="log", yscale="log", xlabel="rows per request", ylabel="p50 latency, ms (1 connection)")
        ax.set_title(model_title(label, model))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return _save(figure, path)


def batch_plot(models: dict[str, dict], batch_rows: int, path: Path) -> Path:
    """Batch rows/s against worker processes, beside the in-process rate of the same model."""
    figure = Figure(figsize=(5.2 * len(models), 4.2), layout="constrained")
    axes = figure.subplots(1, len(models), squeeze=False)[0]
    for ax, (label, model) in zip(axes, models.items(), strict=True):
        runs = sorted(
            (run["worker_processes"], run["rows_per_s"])
            for run in model.get("batch", [])
            if run.get("rows") == batch_rows and "rows_per_s" in run
        )
        if runs:
            workers, rates = zip(*runs, strict=True)
            ax.plot(workers, rates, marker="o", color="tab:blue", label="predictq batch job, submit to download")
            ax.set_xticks(workers)
            ax.set_xlim(0.5, max(workers) + 0.5)
        in_process = model.get("vectorized", {}).get("rows_per_s")
        if in_process:
            ax.axhline(in_process, color="tab:green", linestyle="--", label="one in-process predict_proba")
            ax.axhline(in_process / 2, color="tab:green", linestyle=":", label="target: half the in-process rate")
        ax.set(xlabel="worker processes", ylabel="rows/s", yscale="log")
        shown = [rate for _, rate in runs] + ([in_process, in_process / 2] if in_process else [])
        if shown:
            ax.set_ylim(min(shown) / 2, max(shown) * 3)  # room above the lines for the legend
        ax.set_title(f"{model_title(label, model)}, {short_count(batch_rows)}-row CSV job")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    return _save(figure, path)

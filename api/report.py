"""A model version's report as one self-contained HTML page: metrics and plots rendered here.

Plots are drawn with matplotlib's object API (a ``Figure`` per plot, no pyplot state, so
request threads never share a figure) and embedded as PNG data URLs: the page needs no
JavaScript and loads nothing from elsewhere.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from flask import render_template
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from shared.traffic import UNSEEN

TRAINING_COLOUR = "#4C72B0"
TRAFFIC_COLOUR = "#DD8452"


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def confusion_plot(diagnostics: dict) -> str:
    labels = [str(v) for v in diagnostics["labels"]]
    matrix = np.array(diagnostics["confusion_matrix"])
    figure = Figure(figsize=(1.2 * len(labels) + 2.5, 1.1 * len(labels) + 2), layout="constrained")
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title("Holdout confusion matrix")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    return _png(figure)


def residual_plot(diagnostics: dict) -> str:
    actual = np.array(diagnostics["actual"])
    predicted = np.array(diagnostics["predicted"])
    figure = Figure(figsize=(10, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.scatter(actual, predicted, s=10, alpha=0.6, color=TRAINING_COLOUR)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    left.plot([low, high], [low, high], color="grey", linewidth=1)
    left.set_xlabel("actual")
    left.set_ylabel("predicted")
    left.set_title("Holdout: predicted vs actual")
    right.hist(predicted - actual, bins=30, color=TRAINING_COLOUR)
    right.set_xlabel("residual (predicted - actual)")
    right.set_title("Holdout residuals")
    return _png(figure)


def feature_plots(features: list[dict], traffic: dict | None) -> str:
    """One figure, a panel per feature: its training distribution beside what traffic sent."""
    columns = 2
    rows = -(-len(features) // columns)
    figure = Figure(figsize=(11, 3.2 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    seen = (traffic or {}).get("features", {})
    for axes, feature in zip(grid.flat, features, strict=False):
        counts = seen.get(feature["name"])
        _feature_panel(axes, feature, {**counts, "rows": traffic["rows"]} if counts else None)
    for axes in list(grid.flat)[len(features) :]:
        axes.set_visible(False)
    return _png(figure)


def _feature_panel(axes: Axes, feature: dict, traffic: dict | None) -> None:
    stats = feature["stats"]
    if feature["kind"] == "numeric":
        edges = stats.get("histogram", {}).get("edges", [])
        counts = np.array(stats.get("histogram", {}).get("counts", []), dtype=float)
        if len(edges) > 1:
            widths = np.diff(edges)
            axes.bar(edges[:-1], counts / max(counts.sum(), 1), widths, align="edge", alpha=0.6,
                     color=TRAINING_COLOUR, label="training")  # fmt: skip
            if traffic and traffic["rows"]:
                seen = np.array(traffic["bins"], dtype=float)
                total = max(seen.sum() + traffic["below"] + traffic["above"], 1)
                axes.bar(edges[:-1], seen / total, widths, align="edge", alpha=0.5, color=TRAFFIC_COLOUR,
                         label=f"traffic ({traffic['below']} below, {traffic['above']} above range, "
                         f"{traffic['missing']} missing)")  # fmt: skip
        axes.set_ylabel("share of rows")
    else:
        levels = dict(stats.get("levels", {}))
        names = list(levels)
        if traffic and traffic["levels"].get(UNSEEN):
            names.append(UNSEEN)
        positions = np.arange(len(names))
        axes.bar(positions - 0.2, [levels.get(n, 0) for n in names], 0.4, color=TRAINING_COLOUR, label="training")
        if traffic and traffic["rows"]:
            total = max(sum(traffic["levels"].values()), 1)
            axes.bar(positions + 0.2, [traffic["levels"].get(n, 0) / total for n in names], 0.4,
                     color=TRAFFIC_COLOUR, label="traffic")  # fmt: skip
        axes.set_xticks(positions, names, rotation=30, ha="right")
        axes.set_ylabel("share of rows")
    axes.set_title(f"{feature['name']} ({feature['kind']})")
    axes.legend(fontsize="small")


def render_report(manifest: dict, traffic: dict | None, active: bool) -> str:
    diagnostics = manifest.get("diagnostics") or {}
    if "confusion_matrix" in diagnostics:
        quality_plot = confusion_plot(diagnostics)
    elif diagnostics.get("actual"):
        quality_plot = residual_plot(diagnostics)
    else:
        quality_plot = None
    features = manifest["feature_schema"]["features"]
    return render_template(
        "report.html",
        manifest=manifest,
        metrics=manifest["metrics"]["holdout"],
        quality_plot=quality_plot,
        features_plot=feature_plots(features, traffic),
        traffic_rows=(traffic or {}).get("rows", 0),
        # The file's name only: the server's own directory layout is nobody's business.
        training_file=Path(manifest["training_data"]["path"]).name,
        active=active,
    )

"""What ``POST /predict`` traffic sent, binned like the training data, for the model report.

Each API process counts in memory and writes its counts to one small file per model
version at most every ``flush_interval_s``; the report adds up every process's file, so
all API replicas sharing the data directory show up.
"""

from __future__ import annotations

import bisect
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from shared.inputs import MISSING_CATEGORY, PreparedInput
from shared.request_rows import PreparedRows
from shared.store import LoadedModel

UNSEEN = "(unseen)"


def _empty_counts(model: LoadedModel) -> dict:
    features = {}
    for feature in model.schema.features:
        if feature.kind == "numeric":
            bins = len(feature.stats.get("histogram", {}).get("counts", []))
            features[feature.name] = {"below": 0, "bins": [0] * bins, "above": 0, "missing": 0}
        else:
            features[feature.name] = {"levels": {}, "missing": 0}
    return {"rows": 0, "features": features}


class TrafficMonitor:
    def __init__(self, directory: Path, flush_interval_s: float = 5.0):
        self.directory = Path(directory)
        self.flush_interval_s = flush_interval_s
        self.process = f"{socket.gethostname()}-{os.getpid()}"
        self._counts: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()

    def record(self, model: LoadedModel, prepared: PreparedInput | PreparedRows) -> None:
        """Add one request's (or chunk's) rows to the counts of ``model``."""
        few = isinstance(prepared, PreparedRows)  # a small request: counted value by value, no numpy
        with self._lock:
            counts = self._counts.setdefault(model.version, _empty_counts(model))
            counts["rows"] += prepared.rows
            for feature in model.schema.features:
                into = counts["features"][feature.name]
                histogram = feature.stats.get("histogram", {})
                if feature.kind == "numeric" and few:
                    _count_numbers(into, prepared.sent[feature.name], histogram)
                elif feature.kind == "numeric":
                    _count_numeric(into, prepared.original[feature.name], histogram)
                elif few:
                    _count_level_values(into, prepared.values[feature.name], feature.levels)
                else:
                    _count_levels(into, prepared.columns[feature.name], feature.levels)
            due = time.monotonic() - self._flushed_at >= self.flush_interval_s
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            snapshot = json.loads(json.dumps(self._counts))
            self._flushed_at = time.monotonic()
        for version, counts in snapshot.items():
            folder = self.directory / version
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump(counts, handle)
            os.replace(tmp, folder / f"{self.process}.json")


def _count_numeric(into: dict, values: np.ndarray, histogram: dict) -> None:
    missing = np.isnan(values)
    into["missing"] += int(missing.sum())
    present = values[~missing]
    edges = histogram.get("edges") or []
    if not edges:
        return
    into["below"] += int((present < edges[0]).sum())
    into["above"] += int((present > edges[-1]).sum())
    inside = present[(present >= edges[0]) & (present <= edges[-1])]
    counts, _ = np.histogram(inside, bins=edges)
    into["bins"] = [a + int(b) for a, b in zip(into["bins"], counts, strict=True)]


def _count_numbers(into: dict, values: list[float], histogram: dict) -> None:
    """:func:`_count_numeric` for a few Python floats; bins as numpy's (the last one closed)."""
    edges = histogram.get("edges") or []
    bins = into["bins"]
    for value in values:
        if value != value:
            into["missing"] += 1
        elif not edges:
            continue
        elif value < edges[0]:
            into["below"] += 1
        elif value > edges[-1]:
            into["above"] += 1
        else:
            bins[min(bisect.bisect_right(edges, value) - 1, len(bins) - 1)] += 1


def _count_level_values(into: dict, values: list[str], levels: frozenset[str]) -> None:
    for value in values:
        if value == MISSING_CATEGORY:
            into["missing"] += 1
        else:
            key = value if value in levels else UNSEEN
            into["levels"][key] = into["levels"].get(key, 0) + 1


def _count_levels(into: dict, values: np.ndarray, levels: frozenset[str]) -> None:
    names, counts = np.unique(values.astype(str), return_counts=True)
    for name, count in zip(names, counts, strict=True):
        if name == MISSING_CATEGORY:
            into["missing"] += int(count)
            continue
        key = name if name in levels else UNSEEN
        into["levels"][key] = into["levels"].get(key, 0) + int(count)


def load_traffic(directory: Path, version: str) -> dict | None:
    """Every process's counts for ``version`` added up; None when nothing was recorded."""
    files = sorted((Path(directory) / version).glob("*.json"))
    total: dict | None = None
    for path in files:
        try:
            part = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a file being replaced right now; the next look will read it
        if total is None:
            total = part
            continue
        total["rows"] += part["rows"]
        for name, counts in part["features"].items():
            into = total["features"].setdefault(name, counts)
            if into is counts:
                continue
            for key, value in counts.items():
                if key == "bins":
                    into["bins"] = [a + b for a, b in zip(into["bins"], value, strict=False)]
                elif key == "levels":
                    for level, count in value.items():
                        into["levels"][level] = into["levels"].get(level, 0) + count
                else:
                    into[key] += value
    return total

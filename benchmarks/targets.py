"""The issue's targets as ratios of measured figures, each with its bound and verdict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.latency import CONCURRENT_CONNECTIONS
from benchmarks.servers import FLOOR, PREDICTQ, TEXTBOOK

GIB_IN_MIB = 1024.0
BATCH_ROWS = 1_000_000
TEN_MILLION = 10_000_000


@dataclass(frozen=True)
class Target:
    """One stated target: a figure computed from a model's results and the bound it must meet."""

    key: str
    statement: str
    bound: float
    at_most: bool  # True: the figure must not exceed the bound; False: must reach it
    figure: Callable[[dict, int], float | None]  # (a model's results, rows of the batch job)
    unit: str = "x"

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "not measured"
        met = value <= self.bound if self.at_most else value >= self.bound
        return "pass" if met else "miss"


def http_figure(model: dict, server: str, rows: int, connections: int, name: str) -> float | None:
    figures = model.get("http", {}).get(server, {}).get(f"{rows}_rows_{connections}_conn", {})
    return figures.get(name)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def batch_run(model: dict, rows: int, worker_processes: int) -> dict:
    for run in model.get("batch", []):
        if run.get("rows") == rows and run.get("worker_processes") == worker_processes:
            return run
    return {}


def _p50(model: dict, server: str, rows: int = 1) -> float | None:
    return http_figure(model, server, rows, 1, "p50_ms")


def _rps(model: dict, server: str) -> float | None:
    return http_figure(model, server, 1, CONCURRENT_CONNECTIONS, "requests_per_s")


def _batch_share(model: dict, batch_rows: int) -> float | None:
    in_process = model.get("vectorized", {}).get("rows_per_s")
    return _ratio(batch_run(model, batch_rows, 2).get("rows_per_s"), in_process)


def _worker_rss(model: dict, rows: int) -> float | None:
    return batch_run(model, rows, 2).get("memory", {}).get("worker_peak_rss_mib")


TARGETS = (
    Target(
        "latency_vs_floor", "1-row p50 at 1 connection ≤ 2.0 x the floor's", 2.0, True,
        lambda m, _: _ratio(_p50(m, PREDICTQ), _p50(m, FLOOR)),
    ),
    Target(
        "textbook_latency_vs_predictq", "textbook 1-row p50 ≥ 9 x predictq's", 9.0, False,
        lambda m, _: _ratio(_p50(m, TEXTBOOK), _p50(m, PREDICTQ)),
    ),
    Target(
        "rps_vs_floor", "requests/s at 16 connections ≥ 0.65 x the floor's", 0.65, False,
        lambda m, _: _ratio(_rps(m, PREDICTQ), _rps(m, FLOOR)),
    ),
    Target(
        "rps_vs_textbook", "requests/s at 16 connections ≥ 9 x the textbook's", 9.0, False,
        lambda m, _: _ratio(_rps(m, PREDICTQ), _rps(m, TEXTBOOK)),
    ),
    Target(
        "large_latency_vs_textbook", "1,000-row p50 ≤ 0.5 x the textbook's", 0.5, True,
        lambda m, _: _ratio(_p50(m, PREDICTQ, 1000), _p50(m, TEXTBOOK, 1000)),
    ),
    Target(
        "batch_vs_in_process", "{rows}-row batch with 2 worker processes ≥ 0.5 x in-process rows/s", 0.5, False,
        _batch_share,
    ),
    Target("worker_rss", "worker peak RSS at {rows} rows ≤ 1 GiB", GIB_IN_MIB, True, _worker_rss, "MiB"),
    Target(
        "worker_rss_10m", "worker peak RSS at 10M rows ≤ 1 GiB", GIB_IN_MIB, True,
        lambda m, _: _worker_rss(m, TEN_MILLION), "MiB",
    ),
)  # fmt: skip


def short_count(rows: int) -> str:
    """1000000 -> "1M", 100000 -> "100k"."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    return f"{rows // 1000}k" if rows % 1000 == 0 else f"{rows:,}"


def evaluate_targets(models: dict[str, dict], batch_rows: int = BATCH_ROWS) -> list[dict]:
    """Every target for every model: its figure, bound and verdict."""
    rows = []
    for label, model in models.items():
        for target in TARGETS:
            value = target.figure(model, batch_rows)
            rows.append(
                {
                    "model": label,
                    "target": target.key,
                    "statement": target.statement.format(rows=short_count(batch_rows)),
                    "value": value,
                    "bound": target.bound,
                    "at_most": target.at_most,
                    "unit": target.unit,
                    "verdict": target.verdict(value),
                }
            )
    return rows

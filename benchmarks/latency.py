"""HTTP latency and throughput of one running server, for every request shape the report needs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks.servers import FLOOR, ServerPlan
from benchmarks.wrk import run_wrk

log = logging.getLogger(__name__)

ROWS_PER_REQUEST = (1, 10, 100, 1000)
CONCURRENT_CONNECTIONS = 16


@dataclass(frozen=True)
class RequestShape:
    """Rows per request and open connections of one wrk run."""

    rows: int
    connections: int

    @property
    def key(self) -> str:
        return f"{self.rows}_rows_{self.connections}_conn"


# The three figures (1 row at 1 and 16 connections, 1,000 rows at 1), plus the sizes
# between them for the latency plot.
SHAPES = (
    RequestShape(1, 1),
    RequestShape(1, CONCURRENT_CONNECTIONS),
    *(RequestShape(rows, 1) for rows in ROWS_PER_REQUEST[1:]),
)


@dataclass(frozen=True)
class LoadDurations:
    """How long each wrk run lasts; the warm-up run's figures are dropped."""

    measure_s: float
    warmup_s: float


def post_body(plan: ServerPlan, body_path: Path) -> requests.Response:
    return requests.post(
        plan.predict_url, data=body_path.read_bytes(), headers={"Content-Type": "application/json"}, timeout=120
    )


def answer_problem(plan: ServerPlan, response: requests.Response, rows: int) -> str | None:
    """None when ``response`` is a correct answer for ``rows`` rows, else what is wrong with it."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:400]}"
    predictions = response.json().get("predictions")
    if not isinstance(predictions, list):
        return "no list of predictions in the answer"
    if plan.name != FLOOR and len(predictions) != rows:
        return f"{len(predictions)} predictions for {rows} rows"
    return None


def measure_server(
    plan: ServerPlan, bodies: dict[int, Path], scripts: dict[int, Path], durations: LoadDurations
) -> tuple[dict, dict[int, dict]]:
    """Run every shape against a server that is already up.

    Returns the figures (or the error) by shape key, and the server's answer to each body,
    for checking that servers of the same model agree.
    """
    figures: dict[str, dict] = {}
    answers: dict[int, dict] = {}
    problems: dict[int, str] = {}
    for rows, body_path in bodies.items():
        response = post_body(plan, body_path)
        problem = answer_problem(plan, response, rows)
        if problem is None:
            answers[rows] = response.json()
        else:
            problems[rows] = problem
            log.warning("%s does not answer %d-row requests correctly: %s", plan.name, rows, problem)
    for shape in SHAPES:
        if shape.rows in problems:
            figures[shape.key] = {"error": problems[shape.rows]}
            continue
        load = {"url": plan.predict_url, "script_path": scripts[shape.rows], "connections": shape.connections}
        run_wrk(**load, duration_s=durations.warmup_s)
        result = run_wrk(**load, duration_s=durations.measure_s)
        log.info(
            "%-8s %4d rows, %2d conn: p50 %8.3f ms  p99 %8.3f ms  %8.1f req/s%s",
            plan.name, shape.rows, shape.connections, result.p50_ms, result.p99_ms, result.requests_per_s,
            f"  ({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
            if result.non_2xx or result.socket_errors else "",
        )  # fmt: skip
        figures[shape.key] = result.to_dict()
    return figures, answers

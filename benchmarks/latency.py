"""HTTP latency and throughput of one running server, for every request shape the report needs."""

from __future__ import annotations

import logging
import os
import subprocess
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


def collect_answers(plan: ServerPlan, bodies: dict[int, Path]) -> tuple[dict[int, dict], dict[int, str]]:
    """The server's answer to each body, and what is wrong where it did not answer correctly."""
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
    return answers, problems


def measure_shape(plan: ServerPlan, shape: RequestShape, script_path: Path, durations: LoadDurations) -> dict:
    """A warm-up run, then the measured one, with the machine's load average when it began."""
    load = {"url": plan.predict_url, "script_path": script_path, "connections": shape.connections}
    run_wrk(**load, duration_s=durations.warmup_s)
    load_average = os.getloadavg()[0]
    result = run_wrk(**load, duration_s=durations.measure_s)
    log.info(
        "%-8s %4d rows, %2d conn: p50 %8.3f ms  p99 %8.3f ms  %8.1f req/s  (load %.1f)%s",
        plan.name, shape.rows, shape.connections, result.p50_ms, result.p99_ms, result.requests_per_s, load_average,
        f"  {result.non_2xx} non-2xx, {result.socket_errors} socket errors"
        if result.non_2xx or result.socket_errors else "",
    )  # fmt: skip
    return {**result.to_dict(), "load_average": load_average}


def measure_servers(
    plans: list[ServerPlan], bodies: dict[int, Path], scripts: dict[int, Path], durations: LoadDurations
) -> tuple[dict[str, dict], dict[str, dict[int, dict]]]:
    """Every shape on every server, which are all up: each shape runs on one server after
    another, so a burst of other work on the machine hits all of them alike.

    Returns the figures (or errors) by server and shape key, and each server's answers to
    the bodies, for checking that servers of the same model agree.
    """
    figures: dict[str, dict] = {plan.name: {} for plan in plans}
    answers: dict[str, dict[int, dict]] = {}
    problems: dict[str, dict[int, str]] = {}
    for plan in plans:
        answers[plan.name], problems[plan.name] = collect_answers(plan, bodies)
    for shape in SHAPES:
        for plan in plans:
            if shape.rows in problems[plan.name]:
                figures[plan.name][shape.key] = {"error": problems[plan.name][shape.rows]}
                continue
            try:
                figures[plan.name][shape.key] = measure_shape(plan, shape, scripts[shape.rows], durations)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:  # wrk failed: report it, go on
                log.error("%s %s: %s", plan.name, shape.key, exc)
                figures[plan.name][shape.key] = {"error": str(exc)}
    return figures, answers

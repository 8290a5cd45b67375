"""In-process costs: predictq's serving path per request, the same rows through the bare
pipeline, and one vectorized ``predict_proba`` over a whole batch file."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import pandas as pd

from shared import serving
from shared.inputs import instances_to_frame, prepare
from shared.settings import Settings
from shared.store import LoadedModel, ModelStore

log = logging.getLogger(__name__)

WARMUP_CALLS = 10
MIN_CALLS = 20


def load_active_model(data_dir: Path) -> LoadedModel:
    return ModelStore.from_settings(Settings(data_dir=data_dir)).load_active()


def serving_path() -> tuple[str, Callable[[LoadedModel, list[dict]], dict]]:
    """The function behind POST /predict, by name: instances in, response body out."""
    if hasattr(serving, "predict_instances"):

        def answer(model: LoadedModel, instances: list[dict]) -> dict:
            body = serving.predict_instances(model, instances)
            # Some versions return (scores, body); the body is what a request pays for either way.
            return body[-1] if isinstance(body, tuple) else body

        return "shared.serving.predict_instances", answer

    def predict_instances(model: LoadedModel, instances: list[dict]) -> dict:
        return serving.prediction_response(model, instances_to_frame(instances, model.schema))

    return "shared.serving.prediction_response(instances_to_frame(...))", predict_instances


def time_calls(call: Callable[[], object], budget_s: float) -> dict:
    """Call repeatedly for about ``budget_s`` seconds after a warm-up; latency figures in ms."""
    for _ in range(WARMUP_CALLS):
        call()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < MIN_CALLS or time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    ordered = sorted(samples)
    return {
        "calls": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def _timed_or_error(call: Callable[[], object], budget_s: float) -> dict:
    try:
        return time_calls(call, budget_s)
    except Exception as exc:  # a failing path is a figure too: reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def measure_request_costs(data_dir: Path, model_path: Path, rows_by_size: dict[int, list[dict]], budget_s: float):
    """Per-call cost of predictq's serving path and of the textbook's two lines, by rows per call."""
    model = load_active_model(data_dir)
    name, predict_instances = serving_path()
    pipeline = joblib.load(model_path)
    results: dict = {"serving_function": name, "predictq": {}, "textbook": {}}
    for size, rows in rows_by_size.items():
        results["predictq"][size] = _timed_or_error(lambda rows=rows: predict_instances(model, rows), budget_s)
        results["textbook"][size] = _timed_or_error(
            lambda rows=rows: pipeline.predict_proba(pd.DataFrame(rows)), budget_s
        )
        log.info(
            "in process, %4d rows: predictq %s, textbook %s",
            size, _describe(results["predictq"][size]), _describe(results["textbook"][size]),
        )  # fmt: skip
    return results


def _describe(figures: dict) -> str:
    return figures["error"] if "error" in figures else f"p50 {figures['p50_ms']:.3f} ms"


def measure_vectorized_rate(data_dir: Path, model_path: Path, csv_path: Path) -> dict:
    """Rows/s of one ``predict_proba`` call on the whole file, as ``pd.read_csv`` reads it.

    The model is ``joblib.load(model.joblib)`` on its own. Should it refuse the raw frame,
    the error is reported and the rate is taken on the frame predictq's coercion makes.
    """
    frame = pd.read_csv(csv_path)
    pipeline = joblib.load(model_path)
    result: dict = {"rows": len(frame), "input": "raw frame from pd.read_csv"}
    try:
        result["seconds"] = _time_once(lambda: pipeline.predict_proba(frame))
    except ValueError as exc:
        result["raw_frame_error"] = str(exc).splitlines()[0]
        model = load_active_model(data_dir)
        coerced = prepare(frame, model.schema, model.policy).frame
        result["input"] = "frame coerced by shared.inputs.prepare (the raw frame was refused)"
        result["seconds"] = _time_once(lambda: pipeline.predict_proba(coerced))
    result["rows_per_s"] = len(frame) / result["seconds"]
    log.info("in process, one predict_proba on %d rows: %.0f rows/s", len(frame), result["rows_per_s"])
    return result


def _time_once(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started

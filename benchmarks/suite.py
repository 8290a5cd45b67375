"""The whole run: one synthetic table, two models, every measurement, one report."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import plots, report
from benchmarks.batch import run_batch
from benchmarks.in_process import measure_request_costs, measure_vectorized_rate
from benchmarks.latency import ROWS_PER_REQUEST, LoadDurations, measure_servers
from benchmarks.machine import library_versions, machine_description, product_revision
from benchmarks.models import TrainedVersion, train_model
from benchmarks.servers import PREDICTQ, TEXTBOOK, floor_plan, predictq_plan, serving, textbook_plan
from benchmarks.synthetic import SEED, TRAINING_ROWS, request_rows, synthetic_table, write_batch_csv, write_body
from benchmarks.targets import TEN_MILLION, evaluate_targets
from benchmarks.wrk import write_script

log = logging.getLogger(__name__)

WORKER_COUNTS = (1, 2)
WARMUP_JOB_ROWS = 20_000
IN_PROCESS_SIZES = (1, 1000)


@dataclass(frozen=True)
class RunOptions:
    """What one invocation measures and where it writes."""

    work_dir: Path
    output: Path
    models: tuple[str, ...]
    quick: bool = False
    ten_million: bool = False

    @property
    def durations(self) -> LoadDurations:
        return LoadDurations(measure_s=2, warmup_s=1) if self.quick else LoadDurations(measure_s=6, warmup_s=1)

    @property
    def batch_rows(self) -> int:
        return 100_000 if self.quick else 1_000_000

    @property
    def in_process_s(self) -> float:
        return 0.5 if self.quick else 2.0


def attempt(what: str, call: Callable[[], object]) -> object:
    """Run one measurement; a failure is logged and recorded, and the run goes on."""
    try:
        return call()
    except Exception as exc:
        log.error("%s failed: %s\n%s", what, exc, traceback.format_exc())
        return {"error": f"{type(exc).__name__}: {exc}"}


def agreement(textbook: dict[int, dict], predictq: dict[int, dict]) -> dict | None:
    """Whether predictq and the textbook app gave the same answers to the same bodies."""
    rows = labels_equal = 0
    largest = 0.0
    for size in textbook.keys() & predictq.keys():
        theirs, ours = textbook[size], predictq[size]
        rows += size
        labels_equal += sum(a == b for a, b in zip(theirs["predictions"], ours["predictions"], strict=True))
        for their_row, our_row in zip(theirs["probabilities"], ours["probabilities"], strict=True):
            largest = max(largest, *(abs(a - b) for a, b in zip(their_row, our_row.values(), strict=True)))
    if not rows:
        return None
    return {"rows": rows, "labels_equal": labels_equal == rows, "max_probability_difference": largest}


def measure_http(trained: TrainedVersion, bodies: dict, scripts: dict, options: RunOptions, logs: Path) -> dict:
    """The floor, the textbook app and predictq for one model, all up at once."""
    figures: dict = {}
    with contextlib.ExitStack() as running:
        plans = []
        for plan in (floor_plan(), textbook_plan(trained.model_path), predictq_plan(trained.data_dir)):
            log.info("%s: starting %s on %s", trained.label, plan.name, plan.base_url)
            log_path = logs / f"{trained.label}-{plan.name}.log"
            started = attempt(f"starting {plan.name}", lambda p=plan, f=log_path: running.enter_context(serving(p, f)))
            if isinstance(started, dict):
                figures[plan.name] = started
            else:
                plans.append(plan)
        measured, answers = measure_servers(plans, bodies, scripts, options.durations)
    figures.update(measured)
    return {"http": figures, "agreement": agreement(answers.get(TEXTBOOK, {}), answers.get(PREDICTQ, {}))}


def measure_batches(trained: TrainedVersion, csvs: dict[int, Path], warmup_csv: Path, logs: Path) -> list[dict]:
    runs = []
    for rows, csv_path in csvs.items():
        for workers in WORKER_COUNTS if rows != TEN_MILLION else (2,):
            log.info("%s: %d-row batch with %d worker processes", trained.label, rows, workers)
            log_path = logs / f"{trained.label}-batch-{rows}-{workers}.log"
            outcome = attempt(
                f"{trained.label} batch",
                lambda r=rows, w=workers, c=csv_path, p=log_path: run_batch(trained.data_dir, c, r, w, warmup_csv, p),
            )
            runs.append({"rows": rows, "worker_processes": workers, **outcome})
    return runs


def measure_model(label: str, inputs: dict, options: RunOptions) -> dict:
    work, logs = options.work_dir, options.work_dir / "logs"
    trained = train_model(label, inputs["table_csv"], work / label)
    results: dict = {"model": trained.to_dict()}
    results.update(measure_http(trained, inputs["bodies"], inputs["scripts"], options, logs))
    data_dir, model_path = trained.data_dir, trained.model_path
    results["in_process"] = attempt(
        f"{label} in process",
        lambda: measure_request_costs(data_dir, model_path, inputs["in_process_rows"], options.in_process_s),
    )
    results["vectorized"] = attempt(
        f"{label} vectorized",
        lambda: measure_vectorized_rate(data_dir, model_path, inputs["batch_csvs"][options.batch_rows]),
    )
    results["batch"] = measure_batches(trained, inputs["batch_csvs"], inputs["warmup_csv"], logs)
    return results


def prepare_inputs(options: RunOptions) -> dict:
    """The table, the request bodies with their wrk scripts, and the batch files."""
    work = options.work_dir
    (work / "logs").mkdir(parents=True, exist_ok=True)
    table = synthetic_table(TRAINING_ROWS, SEED)
    table_csv = work / "table.csv"
    table.to_csv(table_csv, index=False)
    rows = {size: request_rows(table, size) for size in ROWS_PER_REQUEST}
    bodies = {size: write_body(rows[size], work / f"body-{size}.json") for size in ROWS_PER_REQUEST}
    scripts = {size: write_script(bodies[size], work / f"post-{size}.lua") for size in ROWS_PER_REQUEST}
    batch_sizes = [options.batch_rows] + ([TEN_MILLION] if options.ten_million else [])
    log.info("writing batch files of %s rows", ", ".join(f"{n:,}" for n in batch_sizes))
    batch_csvs = {n: write_batch_csv(work / f"batch-{n}.csv", n) for n in batch_sizes}
    return {
        "table_csv": table_csv,
        "bodies": bodies,
        "scripts": scripts,
        "in_process_rows": {size: rows[size] for size in IN_PROCESS_SIZES},
        "batch_csvs": batch_csvs,
        "warmup_csv": write_batch_csv(work / "warmup.csv", WARMUP_JOB_ROWS),
    }


def run_suite(options: RunOptions, command: str) -> dict:
    """Measure everything, write the report files, and return the results."""
    started = time.monotonic()
    results: dict = {
        "command": command,
        "started_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "quick": options.quick,
        "revision": product_revision(),
        "machine": machine_description(),
        "versions": library_versions(),
        "settings": {
            "training_rows": TRAINING_ROWS,
            "seed": SEED,
            "measure_s": options.durations.measure_s,
            "warmup_s": options.durations.warmup_s,
            "in_process_s": options.in_process_s,
            "batch_rows": options.batch_rows,
            "worker_counts": WORKER_COUNTS,
            "warmup_job_rows": WARMUP_JOB_ROWS,
        },
        "models": {},
    }
    load_at_start = os.getloadavg()[0]
    inputs = prepare_inputs(options)
    for label in options.models:
        results["models"][label] = attempt(
            f"measuring {label}", lambda label=label: measure_model(label, inputs, options)
        )
    results["load_average"] = [load_at_start, os.getloadavg()[0]]
    results["targets"] = evaluate_targets(results["models"], options.batch_rows)
    results["duration_s"] = time.monotonic() - started
    write_outputs(results, options.output)
    return results


def write_outputs(results: dict, output: Path) -> None:
    """``output`` (markdown), with the JSON results and the two plots beside it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path = output.with_suffix(".json")
    latency_png = output.with_name(f"{output.stem}-latency.png")
    batch_png = output.with_name(f"{output.stem}-batch.png")
    results["json_name"] = json_path.name
    plots.latency_plot(results["models"], latency_png)
    plots.batch_plot(results["models"], results["settings"]["batch_rows"], batch_png)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    output.write_text(report.markdown(results, latency_png.name, batch_png.name))
    log.info("wrote %s, %s, %s and %s", output, json_path, latency_png, batch_png)

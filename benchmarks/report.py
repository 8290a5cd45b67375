"""``docs/benchmarks.md`` and the console summary, written from one run's results."""

from __future__ import annotations

from benchmarks.latency import CONCURRENT_CONNECTIONS
from benchmarks.servers import SERVER_NAMES
from benchmarks.targets import TEN_MILLION, http_figure, short_count

METHOD = """\
## How it measures

- Data: a seeded synthetic table (`benchmarks/synthetic.py`, seed {seed}), {training_rows:,} rows, 8 numeric and
  3 categorical features each missing in about 5 % of rows, and a binary `outcome` that depends on them.
- Models: `predictq train --estimator logistic`, and `predictq train` with no estimator (the default), each in
  its own data directory.
- floor: no model. Flask + gunicorn (2 sync workers) parse the JSON body and answer a constant
  (`benchmarks/apps/floor.py`).
- textbook: Flask + gunicorn (2 sync workers), `pd.DataFrame(body["instances"])` then `pipeline.predict_proba`,
  on predictq's `model.joblib` loaded with `joblib.load` (`benchmarks/apps/textbook.py`).
- predictq: `predictq serve` with its defaults against the model's data directory, `POST /predict`.
- Load: wrk, {measure_s:g} s per figure after a {warmup_s:g} s warm-up whose figures are dropped. The three servers
  of a model are up together and each request shape runs on one after the other, so other work on the machine
  weighs on all three alike. Bodies are rows of the table with their missing values as JSON null; the 1-row body
  has a missing numeric and a missing categorical value. p50 and p99 are wrk's histogram percentiles, printed in
  microseconds by the script's `done` hook.
- In process: the function `POST /predict` calls, in a loop for {in_process_s:g} s per size, on the model loaded
  with `ModelStore`; beside it the textbook app's two lines on the same rows.
- Batch: a {batch_rows:,}-row CSV of unseen rows, submitted as `text/csv` to `POST /jobs` of a fresh `predictq up`
  (`PREDICTQ_WORKER_CONCURRENCY` {worker_counts}), polled every 0.2 s, its CSV result streamed back and its rows
  counted; timed from submission to the last byte. A {warmup_job_rows:,}-row job runs first, untimed. Peak RSS is
  each process's `VmHWM`, sampled every 0.2 s. In process: one `predict_proba` call on the same file read with
  `pd.read_csv`, by the `model.joblib` loaded on its own.
"""
BATCH_TIMINGS = ("submit_s", "queue_and_scoring_s", "download_s", "total_s")


def model_title(label: str, model: dict) -> str:
    """ "default: random_forest (100 trees)"; just "logistic" when the estimator is the label."""
    description = model.get("model", {}).get("description", "")
    return label if description in ("", label) else f"{label}: {description}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _figure(target_row: dict) -> str:
    value = target_row["value"]
    if value is None:
        return "-"
    return f"{value:,.0f} MiB" if target_row["unit"] == "MiB" else f"{value:.3g} x"


def _bound(target_row: dict) -> str:
    op = "≤" if target_row["at_most"] else "≥"
    unit = " MiB" if target_row["unit"] == "MiB" else " x"
    return f"{op} {target_row['bound']:g}{unit}"


def targets_table(results: dict) -> list[str]:
    lines = ["| model | target | measured | bound | verdict |", "|---|---|---|---|---|"]
    for row in results["targets"]:
        verdict = {"pass": "**pass**", "miss": "**miss**"}.get(row["verdict"], row["verdict"])
        lines.append(f"| {row['model']} | {row['statement']} | {_figure(row)} | {_bound(row)} | {verdict} |")
    return lines


def http_table(model: dict) -> list[str]:
    c = CONCURRENT_CONNECTIONS
    lines = [
        f"| server | 1-row p50 | 1-row p99 | req/s at {c} conn | p99 at {c} conn | 10-row p50 | 100-row p50 "
        "| 1,000-row p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for server in SERVER_NAMES:

        def fig(rows: int, conns: int, name: str, server: str = server) -> float | None:
            return http_figure(model, server, rows, conns, name)

        cells = [
            _ms(fig(1, 1, "p50_ms")),
            _ms(fig(1, 1, "p99_ms")),
            _number(fig(1, c, "requests_per_s")),
            _ms(fig(1, c, "p99_ms")),
            _ms(fig(10, 1, "p50_ms")),
            _ms(fig(100, 1, "p50_ms")),
            _ms(fig(1000, 1, "p50_ms")),
        ]
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return lines


def in_process_table(model: dict) -> list[str]:
    costs = model.get("in_process", {})
    if "error" in costs:
        return [f"Not measured: {costs['error']}"]
    lines = ["| path | 1 row, p50 | 1,000 rows, p50 |", "|---|---|---|"]
    paths = (("predictq", f"`{costs.get('serving_function')}`"), ("textbook", "`predict_proba(pd.DataFrame(rows))`"))
    for name, label in paths:
        cells = []
        for size in (1, 1000):
            figures = costs.get(name, {}).get(size, {})
            cells.append(f"fails: {figures['error'][:120]}" if "error" in figures else _ms(figures.get("p50_ms")))
        lines.append(f"| {name}: {label} | " + " | ".join(cells) + " |")
    return lines


def batch_table(model: dict) -> list[str]:
    vectorized = model.get("vectorized", {})
    in_process = vectorized.get("rows_per_s")
    lines = [
        "| rows | worker processes | submit | queue + scoring | download | total | rows/s | share of in-process "
        "| worker peak RSS | API peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in model.get("batch", []):
        if "error" in run:
            lines.append(f"| {run['rows']:,} | {run['worker_processes']} | failed: {run['error'][:200]} |||||||")
            continue
        roles = run["memory"]["peak_rss_mib_by_role"]
        api = max((mib for role, mib in roles.items() if role.startswith("api")), default=None)
        share = f"{run['rows_per_s'] / in_process:.1%}" if in_process else "-"
        timings = " | ".join(f"{run[key]:.2f} s" for key in BATCH_TIMINGS)
        lines.append(
            f"| {run['rows']:,} | {run['worker_processes']} | {timings} | {run['rows_per_s']:,.0f} | {share} "
            f"| {_number(run['memory']['worker_peak_rss_mib'])} MiB | {_number(api)} MiB |"
        )
    if in_process:
        lines += [
            "",
            f"In process: one `predict_proba` call on the {vectorized['rows']:,}-row frame takes "
            f"{vectorized['seconds']:.2f} s, {in_process:,.0f} rows/s ({vectorized['input']}).",
        ]
        if "raw_frame_error" in vectorized:
            lines.append(f"`model.joblib` on the raw frame fails: `{vectorized['raw_frame_error']}`.")
    elif "error" in vectorized:
        lines += ["", f"In-process rate not measured: {vectorized['error']}"]
    return lines


def _http_errors(model: dict) -> list[str]:
    """One line per server that did not start and per request shape it could not answer."""
    errors = []
    for server, figures in model.get("http", {}).items():
        if "error" in figures:
            errors.append(f"- {server}: {figures['error']}")
            continue
        for key, figure in figures.items():
            if "error" in figure:
                errors.append(f"- {server}, {key.replace('_', ' ')}: {figure['error']}")
    return errors


def _model_section(label: str, model: dict) -> list[str]:
    info = model.get("model", {})
    lines = [f"## {model_title(label, model)}", ""]
    if "error" in model:
        return [*lines, f"Not measured: {model['error']}", ""]
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in info.get("metrics", {}).items() if isinstance(v, float))
    lines += [
        f"Version `{info.get('version')}`; `predictq train` took {info.get('training_wall_s')} s (holdout: {metrics}).",
        "",
        "### HTTP (wrk)",
        "",
        *http_table(model),
        "",
    ]
    loads = [
        f["load_average"] for figures in model.get("http", {}).values() for f in figures.values() if "load_average" in f
    ]
    if loads:
        lines += [f"Load average (1 min) as these runs began: {min(loads):.1f} to {max(loads):.1f}.", ""]
    agreement = model.get("agreement")
    if agreement:
        lines += [
            f"predictq and the textbook app agree on the same bodies: labels equal on all "
            f"{agreement['rows']:,} rows: {agreement['labels_equal']}; largest probability difference "
            f"{agreement['max_probability_difference']:.2g}.",
            "",
        ]
    if errors := _http_errors(model):
        lines += ["Not measured:", "", *errors, ""]
    lines += ["### In process (the serving path without HTTP)", "", *in_process_table(model), ""]
    lines += ["### Batch (`predictq up`, CSV job end to end)", "", *batch_table(model), ""]
    return lines


def markdown(results: dict, latency_png: str, batch_png: str) -> str:
    machine, versions, settings = results["machine"], results["versions"], results["settings"]
    version_text = ", ".join(f"{name} {version}" for name, version in versions.items())
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks`, code in `benchmarks/`), which trains the models, starts "
        "every server itself on loopback ports, loads it with wrk and stops it. The raw figures are in "
        f"`{results['json_name']}` beside this page. Do not edit either by hand: run the suite again.",
        "",
        f"- Run: {results['started_at']}, {results['duration_s'] / 60:.1f} min, `{results['command']}`"
        + (" (quick: short runs, small batch; not for comparison)" if results["quick"] else ""),
        f"- Product: commit {results['revision']}",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, {machine['os']}, "
        f"Linux {machine['kernel']}; load average {results['load_average'][0]:.2f} at the start, "
        f"{results['load_average'][1]:.2f} at the end (other work on the machine moves the figures)",
        f"- Versions: {version_text}",
        "",
        METHOD.format(**{**settings, "worker_counts": " then ".join(map(str, settings["worker_counts"]))}),
        "## Targets",
        "",
        *targets_table(results),
        "",
        "Retraining wall time (reported, no bound): "
        + ", ".join(
            f"{label} {m['model']['training_wall_s']:.1f} s" for label, m in results["models"].items() if "model" in m
        )
        + " for `predictq train` on the table, start to exit.",
        "",
    ]
    for label, model in results["models"].items():
        lines += _model_section(label, model)
    ten_million_measured = any(
        run.get("rows") == TEN_MILLION for model in results["models"].values() for run in model.get("batch", [])
    )
    if not ten_million_measured:
        lines += ["The 10,000,000-row batch runs with `make bench BENCH_ARGS=--ten-million`.", ""]
    lines += [
        "## Plots",
        "",
        f"![p50 latency against rows per request]({latency_png})",
        "",
        f"![batch rows/s against worker processes]({batch_png})",
        "",
    ]
    return "\n".join(lines)


def console_summary(results: dict) -> str:
    """The ratios the issue's targets are stated in, one line each."""
    lines = [f"targets ({short_count(results['settings']['batch_rows'])}-row batch):"]
    for row in results["targets"]:
        lines.append(f"  {row['model']:<9} {row['statement']:<68} {_figure(row):>12}  {row['verdict']}")
    return "\n".join(lines)

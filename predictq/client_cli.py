"""The client commands of ``predictq``: predict, jobs, retrain and models, over the HTTP API.

Results go to stdout (or ``-o``); progress bars and notes go to stderr, so output can be piped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
from tqdm import tqdm

from predictq.client import (
    DEFAULT_URL,
    KEY_METRIC,
    PREDICTION_COLUMN,
    PROBABILITY_PREFIX,
    ClientError,
    PredictqClient,
    ProblemError,
)
from shared.errors import PredictqError
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

# pandas and shared.estimators (scikit-learn) are imported where they are used:
# `predictq jobs status` or `models list` should not pay seconds of imports for them.

# POST /predict's default limit. A file up to this size is sent to /predict; a server with a lower
# limit answers with a job instead, which is followed the same way. Larger files go straight to /jobs.
SYNC_MAX_ROWS = 1000
DEFAULT_WAIT_TIMEOUT_S = 600.0


class Failure(click.ClickException):
    """Shown as it is, without click's ``Error:`` prefix: the message says what failed."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.format_message(), err=True, file=file)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def uses_client(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --url and --token, pass a connected :class:`PredictqClient` first, and show client errors readably."""

    @click.option(
        "--url",
        envvar="PREDICTQ_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of the predictq API [env: PREDICTQ_URL].",
    )
    @click.option(
        "--token",
        envvar="PREDICTQ_TOKEN",
        help="Bearer token [env: PREDICTQ_TOKEN; default: PREDICTQ_ADMIN_TOKEN, else <data dir>/admin_token].",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, url: str, token: str | None, **kwargs: Any) -> Any:
        settings = click.get_current_context().find_root().obj
        if not isinstance(settings, Settings):
            settings = load_settings()
        # This machine's own token goes only to a server on this machine, never to another host.
        local = urlsplit(url).hostname in LOOPBACK_HOSTS
        with PredictqClient(url, token or (settings.resolved_admin_token() if local else None)) as client:
            try:
                return func(client, *args, **kwargs)
            except ProblemError as exc:
                message = str(exc)
                if exc.status == 401:
                    message += "\n  hint: pass --token or set PREDICTQ_TOKEN (the server's var/admin_token)"
                raise Failure(message) from exc
            except ClientError as exc:
                raise Failure(str(exc)) from exc

    return wrapper


def timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=0),
        default=DEFAULT_WAIT_TIMEOUT_S,
        show_default=True,
        help="Stop waiting after this many seconds (the job goes on).",
    )(func)


def _echo_note(message: str) -> None:
    click.echo(message, err=True)


def wait_for(client: PredictqClient, record: dict, timeout_s: float) -> dict:
    """Wait for a job with a progress bar on stderr (hidden when stderr is not a terminal)."""
    batch = record.get("kind") == "batch"
    with tqdm(
        desc=f"job {record['job_id'][:8]}",
        unit=" rows" if batch else "",
        total=(record.get("progress") or {}).get("total"),
        file=sys.stderr,
        disable=None,
        leave=False,
        bar_format=None if batch else "{desc}: {elapsed}{postfix}",
    ) as bar:

        def show(update: dict) -> None:
            progress = update.get("progress") or {}
            if progress.get("total") and bar.total != progress["total"]:
                bar.total = progress["total"]
            bar.n = progress.get("done") or 0
            bar.set_postfix_str(update["status"])  # also redraws

        try:
            return client.wait_for_job(record["job_id"], timeout_s, on_update=show)
        except KeyboardInterrupt:
            # Ctrl-C stops the waiting, not the job: say so before click prints "Aborted!".
            bar.close()
            _echo_note(f"stopped waiting; job {record['job_id']} goes on (predictq jobs status / jobs cancel)")
            raise


def _pick_format(chosen: str | None, output: Path | None, on_stdout: str) -> str:
    if chosen:
        return chosen
    if output is None:
        return on_stdout
    return "json" if output.suffix.lower() == ".json" else "csv"


def _write_download(client: PredictqClient, job_id: str, output: Path | None, result_format: str) -> None:
    """The job's result file to ``output`` (whole or not at all) or to stdout."""
    if output is None:
        client.download_result(job_id, click.get_binary_stream("stdout"), result_format)
        return
    partial = output.with_name(output.name + ".part")
    try:
        with open(partial, "wb") as out:
            size = client.download_result(job_id, out, result_format)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    _echo_note(f"wrote {output} ({size} bytes)")


# --- predict ----------------------------------------------------------------------------------


def _read_json_rows(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path} is not a JSON file: {exc}", param_hint="--file") from exc
    rows = data.get("instances") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise click.BadParameter(
            f'{path}: expected a non-empty list of row objects, or {{"instances": [...]}}', param_hint="--file"
        )
    return rows


def _read_csv_head(path: Path, id_column: str | None, rows: int) -> pd.DataFrame:
    import pandas as pd

    # Read as the server reads an upload, so both paths coerce the same values the same way.
    try:
        return pd.read_csv(path, nrows=rows, dtype={id_column: str} if id_column else None)
    except (OSError, ValueError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        raise click.BadParameter(f"{path} is not a readable CSV file: {exc}", param_hint="--file") from exc


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: missing values become null."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def predictions_frame(rows: pd.DataFrame, answer: dict) -> pd.DataFrame:
    """The input rows plus ``prediction`` and one ``probability_<class>`` column per class, as a job's CSV."""
    table = rows.reset_index(drop=True).copy()
    table[PREDICTION_COLUMN] = answer["predictions"]
    probabilities = answer.get("probabilities") or []
    for label in probabilities[0] if probabilities else []:
        table[f"{PROBABILITY_PREFIX}{label}"] = [p[label] for p in probabilities]
    return table


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    cells = [headers] + [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def predictions_table(answer: dict, ids: list | None, id_header: str) -> str:
    probabilities = answer.get("probabilities")
    headers = [id_header, "prediction"] + (["probability"] if probabilities else [])
    rows = []
    for i, label in enumerate(answer["predictions"]):
        row = [ids[i] if ids is not None else i, label]
        if probabilities:
            row.append(f"{max(probabilities[i].values()):.3f}")
        rows.append(row)
    return render_table(headers, rows)


def _emit_predictions(answer: dict, rows: pd.DataFrame, id_column: str | None, output: Path | None, fmt: str) -> None:
    ids = rows[id_column].tolist() if id_column else None
    if fmt == "csv":
        text = predictions_frame(rows, answer).to_csv(index=False)
    elif fmt == "json":
        text = json.dumps({**answer, **({"ids": ids} if ids is not None else {})}, indent=2) + "\n"
    else:
        text = predictions_table(answer, ids, id_column or "row") + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        _echo_note(f"wrote {len(answer['predictions'])} predictions to {output}")
    if answer.get("warnings"):
        _echo_note(
            f"note: {len(answer['warnings'])} warning(s) about values outside what training saw; "
            "--format json lists them"
        )


def _predict_at_once(
    client: PredictqClient, rows: pd.DataFrame, instances: list[dict], model_version: str | None, timeout_s: float
) -> dict:
    answer = client.predict(instances, model_version)
    if "job_id" in answer:
        # More rows than this server answers at once: it queued them as a job instead.
        _echo_note(f"{len(instances)} rows are over the server's limit for /predict; queued as job {answer['job_id']}")
        wait_for(client, answer, timeout_s)
        answer = client.job_result(answer["job_id"])
    return answer


@click.command()
@click.option(
    "--file",
    "-f",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='CSV with a header row, or .json: a list of row objects or {"instances": [...]}.',
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write results here.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json", "table"]),
    help="csv: the rows plus prediction and probability_<class> columns. Default: table on stdout; "
    "with -o, csv (json for a .json name).",
)
@click.option("--id-column", help="Column that identifies rows: kept in the output, not sent as a feature.")
@click.option("--model-version", help="Predict with this version instead of the active one.")
@timeout_option
@uses_client
def predict(
    client: PredictqClient,
    path: Path,
    output: Path | None,
    output_format: str | None,
    id_column: str | None,
    model_version: str | None,
    timeout_s: float,
) -> None:
    """Predict the rows of a CSV or JSON file.

    Up to 1000 rows go to POST /predict and are answered at once; a larger file (or one over
    the server's PREDICTQ_SYNC_MAX_ROWS) runs as a batch job, waited for with a progress bar.
    """
    fmt = _pick_format(output_format, output, "table")
    import pandas as pd

    is_json = path.suffix.lower() == ".json"
    if is_json:
        records = _read_json_rows(path)
        rows = pd.DataFrame.from_records(records)
        small = len(records) <= SYNC_MAX_ROWS
    else:
        rows = _read_csv_head(path, id_column, SYNC_MAX_ROWS + 1)
        records = None
        small = len(rows) <= SYNC_MAX_ROWS
    if id_column and id_column not in rows.columns:
        raise click.BadParameter(f"{path} has no column {id_column!r}", param_hint="--id-column")

    if small:
        if records is None:
            records = frame_records(rows)
        instances = [{k: v for k, v in row.items() if k != id_column} for row in records]
        answer = _predict_at_once(client, rows, instances, model_version, timeout_s)
        _emit_predictions(answer, rows, id_column, output, fmt)
        return

    if is_json:
        record = client.submit_rows(records, id_column, model_version)
    else:
        record = client.submit_csv(path, id_column, model_version)
    _echo_note(f"more than {SYNC_MAX_ROWS} rows: submitted as job {record['job_id']}")
    wait_for(client, record, timeout_s)
    if fmt == "table":
        answer = client.job_result(record["job_id"])
        click.echo(predictions_table(answer, answer.get("ids"), id_column or "row"))
    else:
        _write_download(client, record["job_id"], output, fmt)


# --- jobs -------------------------------------------------------------------------------------


def describe_retrain(result: dict) -> list[str]:
    """Lines saying which version was trained, whether it was promoted, why, and the scores compared."""
    version, active = result.get("version"), result.get("active_version")
    if result.get("promoted"):
        lines = [f"promoted: version {version} is now active"]
    else:
        lines = [f"not promoted: version {version} was saved; {active or 'no version'} stays active"]
    lines.append(f"reason: {result.get('reason')}")
    metric = result.get("metric")
    if metric and result.get("candidate_score") is not None:
        scores = f"{metric}: candidate {result['candidate_score']:.4f}"
        if result.get("active_score") is not None:
            scores += f", active {active} {result['active_score']:.4f}"
        lines.append(scores)
    return lines


def describe_job(record: dict) -> list[str]:
    progress = record.get("progress") or {}
    done, total = progress.get("done") or 0, progress.get("total")
    fields = [
        ("job", record.get("job_id")),
        ("kind", record.get("kind")),
        ("status", record.get("status")),
        ("progress", f"{done}/{total if total is not None else '?'} rows" if record.get("kind") == "batch" else None),
        ("model", record.get("model_version")),
        ("submitted", record.get("submitted_at")),
        ("started", record.get("started_at")),
        ("finished", record.get("finished_at")),
        ("result", record.get("result_url")),
        ("error", record.get("error")),
    ]
    lines = [f"{name:<10} {value}" for name, value in fields if value]
    if record.get("kind") == "retrain" and isinstance(record.get("result"), dict):
        lines += describe_retrain(record["result"])
    return lines


@click.group()
def jobs() -> None:
    """Submit batch jobs, follow them, fetch their results, cancel them."""


@jobs.command("submit")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id-column", help="Column carried through to the result unchanged, to join predictions back.")
@click.option("--model-version", help="Score with this version instead of the active one.")
@click.option("--wait", is_flag=True, help="Wait for the job to finish, with a progress bar.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Wait, then write the result here."
)
@click.option("--format", "result_format", type=click.Choice(["csv", "json"]), help="Result format for -o.")
@timeout_option
@uses_client
def submit_job(
    client: PredictqClient,
    path: Path,
    id_column: str | None,
    model_version: str | None,
    wait: bool,
    output: Path | None,
    result_format: str | None,
    timeout_s: float,
) -> None:
    """Queue a file for batch scoring; print the job id.

    FILE is a CSV (streamed, any size) or a JSON file of rows.
    """
    if path.suffix.lower() == ".json":
        record = client.submit_rows(_read_json_rows(path), id_column, model_version)
    else:
        record = client.submit_csv(path, id_column, model_version)
    click.echo(record["job_id"])
    if not (wait or output):
        return
    record = wait_for(client, record, timeout_s)
    _echo_note(f"job {record['job_id']} succeeded: {(record.get('progress') or {}).get('done')} rows")
    if output is not None:
        _write_download(client, record["job_id"], output, _pick_format(result_format, output, "csv"))


@jobs.command("status")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job finishes; exit 1 if it fails.")
@click.option("--json", "as_json", is_flag=True, help="Print the job record as JSON.")
@timeout_option
@uses_client
def job_status(client: PredictqClient, job_id: str, wait: bool, as_json: bool, timeout_s: float) -> None:
    """Show a job's status, progress and outcome."""
    record = client.job(job_id)
    if wait:
        record = wait_for(client, record, timeout_s)
    click.echo(json.dumps(record, indent=2) if as_json else "\n".join(describe_job(record)))


@jobs.command("result")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@click.option(
    "--format",
    "result_format",
    type=click.Choice(["csv", "json"]),
    help="Default: csv (json when -o names a .json file). A retraining job's result is always JSON.",
)
@uses_client
def job_result(client: PredictqClient, job_id: str, output: Path | None, result_format: str | None) -> None:
    """Download the result of a job that has succeeded."""
    _write_download(client, job_id, output, _pick_format(result_format, output, "csv"))


@jobs.command("cancel")
@click.argument("job_id")
@uses_client
def cancel_job(client: PredictqClient, job_id: str) -> None:
    """Cancel a queued or running job."""
    record = client.cancel_job(job_id)
    click.echo(f"job {record['job_id']} {record['status']}")


# --- retrain and models -----------------------------------------------------------------------


@click.command()
@click.option("--data", help="CSV or Parquet file under the server's data directory [default: its dataset].")
@click.option(
    "--file",
    "upload",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Upload this CSV and train on it.",
)
@click.option("--target", help="Column to predict [default: the active model's target].")
@click.option("--task", type=click.Choice(["classification", "regression"]), help="Default: inferred from the target.")
@click.option("--estimator", help="random_forest, hist_gradient_boosting, logistic, ridge or linear.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Estimator parameter (JSON value).")
@click.option(
    "--activate",
    type=click.Choice(["if_better", "always", "never"]),
    default="if_better",
    show_default=True,
    help="Promote the new version: if it scores at least the active one, always, or never.",
)
@click.option("--wait", is_flag=True, help="Wait for training and print the outcome.")
@timeout_option
@uses_client
def retrain(
    client: PredictqClient,
    data: str | None,
    upload: Path | None,
    params: tuple[str, ...],
    wait: bool,
    timeout_s: float,
    **options: str | None,
) -> None:
    """Train a new model version on the workers; print the job id.

    Needs the admin token. With --activate if_better (the default) the new version is promoted
    only if it scores at least the active one on the same holdout rows.
    """
    if data and upload:
        raise click.UsageError("--data names a file on the server, --file uploads one: give one of them")
    from shared.estimators import parse_params

    try:
        parsed = parse_params(list(params))
    except PredictqError as exc:
        raise click.BadParameter(exc.detail, param_hint="--param") from exc
    body = {"data": data, **options, "params": parsed}
    record = client.retrain({key: value for key, value in body.items() if value is not None}, upload)
    click.echo(record["job_id"])
    if not wait:
        return
    record = wait_for(client, record, timeout_s)
    result = record.get("result") or client.job_result(record["job_id"])
    click.echo("\n".join(describe_retrain(result)))


@click.group()
def models() -> None:
    """List model versions and switch the active one."""


def key_metric(summary: dict) -> str:
    """The metric retraining compares on (macro F1, R²), as ``name value``."""
    metric = KEY_METRIC.get(summary.get("task"))
    value = (summary.get("metrics") or {}).get(metric)
    return f"{metric} {value:.4f}" if isinstance(value, int | float) else ""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@uses_client
def list_models(client: PredictqClient, as_json: bool) -> None:
    """List model versions, newest first; * marks the active one."""
    answer = client.models()
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    if not answer["models"]:
        click.echo("no model versions yet: train one with `predictq train`")
        return
    rows = [
        ["*" if m["active"] else "", m["version"], m["created_at"], m["task"], m["estimator"], key_metric(m)]
        for m in answer["models"]
    ]
    click.echo(render_table(["", "VERSION", "CREATED", "TASK", "ESTIMATOR", "KEY METRIC"], rows))


@models.command("activate")
@click.argument("version")
@uses_client
def activate_model(client: PredictqClient, version: str) -> None:
    """Make VERSION the active model (roll back or forward; needs the admin token)."""
    answer = client.activate(version)
    click.echo(f"active version: {answer['active_version']}")


CLIENT_COMMANDS: list[click.Command] = [predict, jobs, retrain, models]

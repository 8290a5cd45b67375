"""The ``predictq`` command."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from predictq.client_cli import CLIENT_COMMANDS
from shared.errors import PredictqError
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from shared.store import ModelStore

# Training and the model store (scikit-learn, seconds to import) are imported by the commands
# that use them, so the client commands start quickly.


def _split_names(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """predictq: train scikit-learn models on a table and serve their predictions."""
    ctx.obj = load_settings()


for _command in CLIENT_COMMANDS:  # predict, jobs, retrain, models: the HTTP client
    main.add_command(_command)


@main.command()
@click.option(
    "--data", "data_path", type=click.Path(path_type=Path), help="CSV or Parquet file [default: PREDICTQ_DATASET_PATH]."
)
@click.option("--target", help="Column to predict [default: PREDICTQ_DATASET_TARGET].")
@click.option("--task", type=click.Choice(["classification", "regression"]), help="Default: inferred from the target.")
@click.option(
    "--estimator", help="random_forest, hist_gradient_boosting, logistic, ridge, linear, or a dotted class path."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Estimator parameter; repeatable. Values parse as JSON.",
)
@click.option("--numeric", help="Comma-separated columns to treat as numeric.")
@click.option("--categorical", help="Comma-separated columns to treat as categorical.")
@click.option("--ignore", help="Comma-separated columns to leave out.")
@click.option(
    "--holdout",
    "holdout_fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of rows held out for metrics.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--out-of-range",
    "policy",
    type=click.Choice(["warn", "clip", "reject"]),
    help="Policy for values outside the training range [default: PREDICTQ_OUT_OF_RANGE_POLICY].",
)
@click.option(
    "--config", "config_file", type=click.Path(exists=True, path_type=Path), help="TOML file with any of these options."
)
@click.option("--activate", type=click.Choice(["always", "if_better", "never"]), default="always", show_default=True)
@click.option("--if-missing", is_flag=True, help="Do nothing when a model is already active.")
@click.pass_obj
def train(settings: Settings, config_file: Path | None, if_missing: bool, activate: str, **cli: object) -> None:
    """Train a model version from a table and (by default) make it active."""
    from shared.estimators import parse_params
    from shared.lifecycle import train_version
    from shared.training import TrainingOptions

    store = _store(settings)
    if if_missing and store.active_version():
        click.echo(f"model {store.active_version()} is active; nothing to train")
        return
    file_options = tomllib.loads(config_file.read_text()) if config_file else {}
    pick = lambda key: cli[key] if cli[key] not in (None, ()) else file_options.get(key)  # noqa: E731
    data_path = Path(pick("data_path") or file_options.get("data") or settings.dataset_path)
    params = file_options.get("params", {})
    params.update(parse_params(list(cli["params"])))
    names = {}
    for key in ("numeric", "categorical", "ignore"):
        given = cli[key] or file_options.get(key)
        # A comma-separated string (flag or TOML) or a TOML list of names.
        names[key] = _split_names(given) if isinstance(given, str) else given
    options = TrainingOptions(
        target=pick("target") or settings.dataset_target,
        task=pick("task"),
        estimator=pick("estimator"),
        params=params,
        holdout_fraction=cli["holdout_fraction"],
        seed=cli["seed"],
        out_of_range_policy=pick("policy") or file_options.get("out_of_range") or settings.out_of_range_policy,
        allow_dotted_path=True,
        **names,
    )
    try:
        result = train_version(store, data_path, options, activate)
    except PredictqError as exc:
        raise click.ClickException(exc.describe()) from exc
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.option("--workers", type=int, help="gunicorn worker processes [default: PREDICTQ_API_WORKERS].")
@click.pass_obj
def serve(settings: Settings, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn on PREDICTQ_HOST:PREDICTQ_PORT."""
    from api.metrics import fresh_multiprocess_dir

    # Each worker process writes its metrics here and /metrics sums them (prometheus-client
    # reads the variable when imported, so it is set before gunicorn starts).
    metrics_dir = fresh_multiprocess_dir(settings.prometheus_multiproc_dir)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    argv = [
        sys.executable, "-m", "gunicorn",
        "--config", "python:api.gunicorn_conf",  # JSON logs; metric files of exited workers
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(workers or settings.api_workers),
        "--threads", str(settings.api_threads),
        "api:create_app()",
    ]  # fmt: skip
    os.execve(sys.executable, argv, env)


@main.command()
@click.option("--queues", default="batch,training", show_default=True, help="Queues to consume.")
@click.option("--concurrency", type=int, help="Worker processes [default: PREDICTQ_WORKER_CONCURRENCY].")
@click.option("--hostname", help="Celery node name [default: predictq-<pid>@<host>].")
@click.pass_obj
def worker(settings: Settings, queues: str, concurrency: int | None, hostname: str | None) -> None:
    """Run a Celery worker for batch scoring and retraining."""
    from worker.celery_app import make_celery
    from worker.context import read_store_id_at_start
    from worker.logs import configure_worker_logging
    from worker.sweeper import install_sweeper

    configure_worker_logging(settings)
    app = make_celery(settings)
    read_store_id_at_start(app)  # jobs queued for another model store are refused (worker.context)
    install_sweeper(app, settings)  # re-sends the tasks of jobs whose queue messages were lost
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--queues={queues}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--hostname={hostname or f'predictq-{os.getpid()}@%h'}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Run everything locally: Redis (embedded unless PREDICTQ_REDIS_URL is set), a worker and the API.

    Trains the demo model first when no model is active.
    """
    from predictq.local import run_stack

    # Trained once the data directory is known to be this stack's alone.
    sys.exit(run_stack(ctx.obj, prepare=lambda: ctx.invoke(train, if_missing=True)))


def _store(settings: Settings) -> ModelStore:
    from shared.store import ModelStore

    return ModelStore.from_settings(settings)


if __name__ == "__main__":
    main()

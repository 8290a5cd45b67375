"""Turning an accepted request into a queued job: write its input, record it, enqueue it."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import IO, get_args

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from api.bodies import require_text
from api.request_log import request_id
from api.services import Services
from shared.batch import JobFiles, result_columns, save_upload, validate_csv, write_json_input
from shared.errors import BadRequest, FieldError, InvalidInput, PredictqError, ServiceUnavailable, TrainingError
from shared.estimators import make_estimator
from shared.inputs import prepare_rows
from shared.jobs import new_job_id
from shared.logs import bind_context
from shared.settings import OutOfRangePolicy
from shared.store import LoadedModel
from worker.celery_app import RETRAIN_TASK, SPLIT_TASK

log = logging.getLogger(__name__)

ACTIVATION_RULES = ("if_better", "always", "never")
OUT_OF_RANGE_POLICIES = get_args(OutOfRangePolicy)
# Retrain options that name a file, column, rule or registry entry: JSON strings only.
RETRAIN_TEXT_FIELDS = ("activate", "data", "target", "task", "estimator", "out_of_range_policy")
# What a file system takes: longer names raise ENAMETOOLONG instead of "no such file".
MAX_DATA_PATH_BYTES = 4096
MAX_FILE_NAME_BYTES = 255


def model_for_job(services: Services, version: str | None) -> LoadedModel:
    """The pinned version, or the active one at submission (recorded on the job)."""
    return services.model(version)


def _enqueue(services: Services, files: JobFiles, job_id: str, task: str, kind: str, **fields) -> dict:
    try:
        store_id = services.store_id()  # of the store the job's files were just written to
    except BaseException:
        files.remove()
        raise
    try:
        record = services.jobs.create(job_id, kind, request_id=request_id(), store_id=store_id, **fields)
        services.celery.send_task(task, args=[job_id])
    except (RedisError, OperationalError) as exc:
        files.remove()
        with contextlib.suppress(RedisError, PredictqError):
            services.jobs.fail(job_id, "the job could not be queued; submit it again")  # no ghost in the queue
        log.error("cannot queue job %s: %s", job_id, exc)
        raise ServiceUnavailable("The job queue (Redis) cannot be reached; try again shortly") from exc
    except ServiceUnavailable:
        files.remove()  # no queue configured at all: leave nothing behind
        raise
    bind_context(job_id=job_id, model_version=fields.get("model_version"))
    log.info("queued %s job %s", kind, job_id)
    return record


def _csv_limits(services: Services) -> dict:
    """The configured bounds on a CSV upload's first line, checked before a parser reads it."""
    settings = services.settings
    return {"max_header_bytes": settings.max_csv_header_bytes, "max_columns": settings.max_csv_columns}


def submit_instances(services: Services, instances: list, version: str | None, id_column: str | None) -> dict:
    require_text({"model_version": version, "id_column": id_column})
    model = model_for_job(services, version)
    extra = {model.manifest["target"]} | ({id_column} if id_column else set())
    # Fail fast on shape and on every value, with the checks /predict makes: a row refused here
    # is named to the caller now rather than failing the job on a worker later.
    prepare_rows(instances, model.schema, model.policy, allowed_extra=extra)
    if id_column and any(id_column not in row for row in instances):
        raise InvalidInput("Every row must carry the id_column", [FieldError("missing id", field=id_column)])
    job_id = new_job_id()
    files = JobFiles(services.settings.jobs_dir, job_id, services.storage)
    write_json_input(files, instances, result_columns=result_columns(model))
    return _enqueue(
        services, files, job_id, SPLIT_TASK, "batch",
        model_version=model.version, total=len(instances), id_column=id_column, input="json",
    )  # fmt: skip


def submit_csv(services: Services, stream: IO[bytes], version: str | None, id_column: str | None) -> dict:
    model = model_for_job(services, version)
    job_id = new_job_id()
    files = JobFiles(services.settings.jobs_dir, job_id, services.storage).create()
    try:
        save_upload(stream, files.input_csv, services.settings.max_upload_bytes)
        validate_csv(
            files.input_csv, model.schema, id_column, result_columns=result_columns(model), **_csv_limits(services)
        )
        files.store(files.input_csv)  # workers on other hosts read it from there
    except BaseException:
        files.remove()  # a refused upload, a lost client or an unreachable store: leave nothing behind
        raise
    return _enqueue(
        services, files, job_id, SPLIT_TASK, "batch", model_version=model.version, id_column=id_column, input="csv"
    )


def submit_retrain(services: Services, fields: dict, upload: IO[bytes] | None) -> dict:
    settings = services.settings
    require_text({name: fields.get(name) for name in RETRAIN_TEXT_FIELDS})
    activate = fields.get("activate") or "if_better"
    if activate not in ACTIVATION_RULES:
        raise InvalidInput(
            f"activate must be one of {list(ACTIVATION_RULES)}",
            [FieldError("unknown activation rule", field="activate")],
        )
    policy = fields.get("out_of_range_policy") or settings.out_of_range_policy
    if policy not in OUT_OF_RANGE_POLICIES:
        raise InvalidInput(
            f"out_of_range_policy must be one of {list(OUT_OF_RANGE_POLICIES)}",
            [FieldError("unknown out-of-range policy", field="out_of_range_policy")],
        )
    params = fields.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest("'params' must be an object of estimator parameters")
    job_id = new_job_id()
    files = JobFiles(settings.jobs_dir, job_id, services.storage)
    target = fields.get("target")
    try:
        if upload is not None:
            save_upload(upload, files.create().training_csv, settings.max_upload_bytes)
            columns = validate_csv(files.training_csv, None, **_csv_limits(services))
            data_path = files.training_csv
        else:
            data_path = _data_path(settings.data_dir, fields.get("data"), settings.dataset_path)
            columns = None
        target = target or _default_target(services, settings.dataset_target)
        if columns is not None and target not in columns:
            raise InvalidInput(
                f"target {target!r} is not a column of the upload", [FieldError("not in CSV", field="target")]
            )
        task = fields.get("task")
        if task not in (None, "classification", "regression"):
            raise InvalidInput("task must be classification or regression", [FieldError("unknown task", field="task")])
        # Registry names only: an HTTP request never names a class to import. Without a task the
        # data decides it when training, so a name that fits either task is accepted here
        # ("logistic" for a categorical target); one that fits neither is refused now.
        _check_estimator(fields.get("estimator"), [task] if task else ["classification", "regression"], params)
        if upload is not None:
            files.store(files.training_csv)  # the worker that trains fetches it from there
    except BaseException:
        files.remove()  # a refused or broken upload leaves nothing behind
        raise
    options = {
        "data_path": str(Path(data_path).resolve()),
        "activate": activate,
        "target": target,
        "task": task,
        "estimator": fields.get("estimator"),
        "params": params,
        "out_of_range_policy": policy,
        "data_uploaded": upload is not None,
    }
    return _enqueue(services, files, job_id, RETRAIN_TASK, "retrain", options=options)


def _check_estimator(name: str | None, tasks: list[str], params: dict) -> None:
    """Refuse an estimator (or its params) that no task in ``tasks`` can build."""
    refusals = []
    for task in tasks:
        try:
            make_estimator(name, task, params)
            return
        except TrainingError as exc:
            refusals.append(exc)
    raise refusals[0]


def _data_path(data_dir: Path, requested: str | None, default: Path) -> Path:
    if not requested:
        if not default.is_file():
            raise InvalidInput(
                f"The configured dataset {default} does not exist here (PREDICTQ_DATASET_PATH); send 'data' or a file",
                [FieldError("no default dataset", field="data")],
            )
        return default.resolve()
    _check_data_name(requested)
    path = (data_dir / requested).resolve()
    if not path.is_relative_to(data_dir.resolve()):
        raise InvalidInput(
            "data must be a path under the data directory", [FieldError("outside data dir", field="data")]
        )
    if not path.is_file():
        raise InvalidInput(
            f"No file {requested!r} under the data directory", [FieldError("no such file", field="data")]
        )
    return path


def _check_data_name(requested: str) -> None:
    """Refuse a name no file can have before it reaches the file system (which raises, not answers)."""
    problem = None
    if "\x00" in requested:
        problem = "contains a NUL character"
    elif len(requested.encode("utf-8", "surrogatepass")) > MAX_DATA_PATH_BYTES:
        problem = f"is longer than {MAX_DATA_PATH_BYTES} bytes"
    elif any(len(part.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES for part in requested.split("/")):
        problem = f"has a name longer than {MAX_FILE_NAME_BYTES} bytes"
    else:
        try:
            requested.encode("utf-8")
        except UnicodeEncodeError:
            problem = "is not valid UTF-8 text (a lone surrogate)"
    if problem:
        raise InvalidInput(f"data {problem}; name a file under the data directory", [FieldError(problem, field="data")])


def _default_target(services: Services, fallback: str) -> str:
    try:
        return services.active.get().manifest["target"]
    except PredictqError:
        return fallback

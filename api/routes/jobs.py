"""Batch jobs: submit, poll, fetch the result, cancel."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, request, send_file, url_for

from api.auth import require_client
from api.bodies import instances_of, json_object
from api.services import services
from api.submission import submit_csv, submit_instances
from shared.batch import JobFiles, is_job_id
from shared.errors import BadRequest
from shared.jobs import SUCCEEDED, job_not_found
from shared.settings import JOBS_SCOPE

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def _require_job_id(job_id: str) -> None:
    if not is_job_id(job_id):
        raise job_not_found(job_id)


CSV_TYPES = ("text/csv", "application/csv")


def job_view(record: dict) -> dict:
    """The public shape of a job record."""
    job_id = record["job_id"]
    view = {
        "job_id": job_id,
        "kind": record["kind"],
        "status": record["status"],
        "progress": {"done": record.get("done", 0), "total": record.get("total")},
        "submitted_at": record.get("submitted_at"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "model_version": record.get("model_version"),
        "status_url": url_for("jobs.show_job", job_id=job_id, _external=True),
    }
    if record.get("id_column"):
        view["id_column"] = record["id_column"]
    if record["status"] == SUCCEEDED:
        view["result_url"] = url_for("jobs.job_result", job_id=job_id, _external=True)
    if record.get("quality") is not None:
        view["data_quality"] = record["quality"]
    if record.get("result") is not None:
        view["result"] = record["result"]
    if record.get("error"):
        view["error"] = record["error"]
    return view


def accepted(record: dict):
    view = job_view(record)
    return view, 202, {"Location": view["status_url"]}


def _options() -> tuple[str | None, str | None]:
    source = request.form if request.mimetype == "multipart/form-data" else request.args
    return source.get("model_version") or None, source.get("id_column") or None


@bp.post("")
def submit_job():
    require_client(JOBS_SCOPE)
    svc = services()
    if request.mimetype in CSV_TYPES:
        request.max_content_length = svc.settings.max_upload_bytes
        version, id_column = _options()
        return accepted(submit_csv(svc, request.stream, version, id_column))
    if request.mimetype == "multipart/form-data":
        request.max_content_length = svc.settings.max_upload_bytes
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest("multipart/form-data submissions need the CSV in a field named 'file'")
        version, id_column = _options()
        return accepted(submit_csv(svc, upload.stream, version, id_column))
    body = json_object()
    return accepted(submit_instances(svc, instances_of(body), body.get("model_version"), body.get("id_column")))


@bp.get("/<job_id>")
def show_job(job_id: str):
    require_client(JOBS_SCOPE)
    _require_job_id(job_id)
    return job_view(services().jobs.get(job_id))


@bp.delete("/<job_id>")
def cancel_job(job_id: str):
    """Cancel, not erase: the job stops (no chunk is scored after it) and its record stays readable,
    status ``cancelled``, until the retention period removes it with its files, like any finished job."""
    require_client(JOBS_SCOPE)
    _require_job_id(job_id)
    return job_view(services().jobs.cancel(job_id))


@bp.get("/<job_id>/result")
def job_result(job_id: str):
    require_client(JOBS_SCOPE)
    _require_job_id(job_id)
    svc = services()
    record = svc.jobs.require_finished(job_id)
    if record["kind"] == "retrain":
        return record["result"]
    files = JobFiles(svc.settings.jobs_dir, job_id, svc.storage)
    wants_csv = request.args.get("format") == "csv" or (
        request.args.get("format") is None
        and request.accept_mimetypes.best_match(["application/json", "text/csv"]) == "text/csv"
    )
    if wants_csv:
        return _stream(files, files.result_csv, "text/csv", download_name=f"{job_id}.csv")
    return _stream(files, files.result_json, "application/json")


def _stream(files: JobFiles, path: Path, mimetype: str, download_name: str | None = None):
    """Send a stored result in blocks as it is read: never whole in memory, wherever it is stored."""
    size = files.size(path)
    response = send_file(files.open(path), mimetype=mimetype, download_name=download_name, conditional=False)
    response.content_length = size
    return response

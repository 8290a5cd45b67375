"""Refused submissions fail at once as problem JSON, never as a failed job later; cancelling and job lookups."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from werkzeug.datastructures import FileStorage

pytestmark = pytest.mark.integration

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
UNKNOWN_JOB = "0" * 32


def penguin_instances(count: int) -> list[dict]:
    """The first demo rows as JSON objects, without the target."""
    return json.loads(pd.read_csv(PENGUINS_CSV).drop(columns="species").head(count).to_json(orient="records"))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def penguins_without(column: str) -> bytes:
    return csv_bytes(pd.read_csv(PENGUINS_CSV).drop(columns=["species", column]).head(20))


def header_only() -> bytes:
    return csv_bytes(pd.read_csv(PENGUINS_CSV).drop(columns="species").head(0))


BAD_UPLOADS = {
    # name: (body, status, title, words the detail must contain)
    "binary": (bytes(range(256)) * 64, 400, "Bad request", "not CSV text"),
    "missing-feature-column": (penguins_without("bill_depth_mm"), 422, "Invalid input", "bill_depth_mm"),
    "empty": (b"", 400, "Bad request", "empty"),
    "header-only": (header_only(), 400, "Bad request", "no rows"),
}


def post_csv(client, body: bytes, transport: str):
    if transport == "text/csv":
        return client.post("/jobs", data=body, content_type="text/csv")
    upload = FileStorage(io.BytesIO(body), "rows.csv", content_type="text/csv")
    return client.post("/jobs", data={"file": upload}, content_type="multipart/form-data")


@pytest.fixture
def nothing_left_behind(redis_client, data_dir: Path):
    """Assert, after the test's request, that no job record, queued message or job file exists."""

    def check() -> None:
        assert redis_client.keys("predictq:job:*") == []
        assert redis_client.llen("batch") == 0
        jobs_dir = data_dir / "jobs"
        assert not jobs_dir.exists() or not any(path.is_file() for path in jobs_dir.rglob("*"))

    return check


@pytest.mark.parametrize("transport", ["text/csv", "multipart"])
@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_csv_upload_is_refused_at_submission(client, check_problem, nothing_left_behind, case, transport) -> None:
    """Binary, feature-less, empty and header-only uploads get a 4xx problem at once and create no job."""
    body, status, title, words = BAD_UPLOADS[case]

    response = post_csv(client, body, transport)

    problem = check_problem(response, status, title)
    assert words in problem["detail"], problem
    if case == "missing-feature-column":
        assert problem["errors"] == [{"message": "missing required column", "row": None, "field": "bill_depth_mm"}]
    nothing_left_behind()


def test_json_rows_lacking_a_feature_are_refused_with_row_and_field(client, check_problem, nothing_left_behind) -> None:
    """A JSON batch whose second row lacks a feature is a 422 naming that row and field; no job is made."""
    rows = penguin_instances(3)
    del rows[1]["flipper_length_mm"]

    response = client.post("/jobs", json={"instances": rows})

    problem = check_problem(response, 422, "Invalid input")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [(1, "flipper_length_mm")]
    nothing_left_behind()


def test_unknown_job_is_404_problem(client, check_problem) -> None:
    """Status, result and cancel of a job id that never existed are 404 problems."""
    for response in (
        client.get(f"/jobs/{UNKNOWN_JOB}"),
        client.get(f"/jobs/{UNKNOWN_JOB}/result"),
        client.delete(f"/jobs/{UNKNOWN_JOB}"),
    ):
        problem = check_problem(response, 404, "Job not found")
        assert UNKNOWN_JOB in problem["detail"]


@pytest.fixture
def queued_job(client) -> dict:
    """A JSON batch submitted while no worker runs: it stays queued."""
    response = client.post("/jobs", json={"instances": penguin_instances(6)})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_result_of_an_unfinished_job_is_409_problem(client, queued_job, check_problem) -> None:
    """GET /jobs/<id>/result before the job succeeded is a 409 problem saying its status."""
    problem = check_problem(client.get(f"/jobs/{queued_job['job_id']}/result"), 409, "Job not finished")
    assert "queued" in problem["detail"]


def test_cancelled_job_stays_cancelled_when_a_worker_comes(
    client, settings, queued_job, workers, wait_for_job, check_problem
) -> None:
    """DELETE cancels a queued job; a worker started afterwards skips it and it never gets a result."""
    job_id = queued_job["job_id"]

    response = client.delete(f"/jobs/{job_id}")

    assert response.status_code == 200, response.get_json()
    cancelled = response.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    check_problem(client.delete(f"/jobs/{job_id}"), 409, "Job not finished")

    # A job queued after the cancelled one succeeding shows the worker has been through the queue.
    workers.start(settings)
    later = client.post("/jobs", json={"instances": penguin_instances(2)}).get_json()
    assert wait_for_job(client, later["job_id"])["status"] == "succeeded"
    record = client.get(f"/jobs/{job_id}").get_json()
    assert record["status"] == "cancelled"
    assert record["progress"]["done"] == 0
    assert "result_url" not in record
    check_problem(client.get(f"/jobs/{job_id}/result"), 409, "Job not finished")

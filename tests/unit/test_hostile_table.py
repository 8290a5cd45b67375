"""Hostile input, one table: each row a request, the status it must get and a phrase its problem detail holds.

Every row is also held to the promise behind the table: no 5xx, an answer within a few
seconds, and the process's resident memory grown by a bounded amount. The limits come from
settings made small here (body, upload, CSV header and columns), so over-limit rows are cheap.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.errors import PROBLEM_JSON
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.training import TrainingOptions

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
TOKEN = "hostile-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
MAX_REQUEST_BYTES = 64 * 1024
MAX_UPLOAD_BYTES = 32 * 1024
MAX_CSV_HEADER_BYTES = 2048
MAX_CSV_COLUMNS = 40
# Each request answers well within this; a hang fails the row (and pytest-timeout the run).
ANSWER_WITHIN_S = 5.0
# Resident memory one hostile request may leave behind: a fraction of what a naive parse costs.
RSS_GROWTH_LIMIT_BYTES = 64 * 1024 * 1024

ROW = (
    '{"island": "Biscoe", "bill_length_mm": 45.1, "bill_depth_mm": 14.5, "flipper_length_mm": 210, '
    '"body_mass_g": 4500, "sex": "male", "year": 2008}'
)
HEADER = "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
CSV_ROW = "Biscoe,45.1,14.5,210,4500,male,2008"
UNKNOWN_JOB = "0" * 32


@dataclass(frozen=True)
class Row:
    """One hostile request and what it must get."""

    method: str
    path: str
    status: int
    phrase: str
    body: bytes | None = None
    content_type: str | None = "application/json"
    query: dict = field(default_factory=dict)
    form: dict | None = None
    token: bool = True


def instances(row: str) -> bytes:
    return f'{{"instances": [{row}]}}'.encode()


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def upload(content: bytes, **fields: str) -> dict:
    return {"file": (content, "rows.csv", "text/csv"), **fields}


TABLE: dict[str, Row] = {
    # --- JSON bodies on /predict ---------------------------------------------------------
    "predict-truncated-json": Row("POST", "/predict", 400, "not valid JSON", b'{"instances": [{"island": "Bis'),
    "predict-empty-body": Row("POST", "/predict", 400, "not valid JSON", b""),
    "predict-null-body": Row("POST", "/predict", 400, "not valid JSON", b"null"),
    "predict-list-body": Row("POST", "/predict", 400, "Expected a JSON object", b"[1, 2]"),
    "predict-no-instances": Row("POST", "/predict", 400, "'instances' list", b'{"rows": []}'),
    "predict-instances-number": Row("POST", "/predict", 400, "non-empty list", b'{"instances": 5}'),
    "predict-instances-empty": Row("POST", "/predict", 400, "non-empty list", b'{"instances": []}'),
    # Read as numbers that no training range holds: refused by value, with the row and field.
    "predict-nan-literal": Row("POST", "/predict", 422, "do not fit", instances(ROW.replace("45.1", "NaN"))),
    "predict-infinity-literal": Row("POST", "/predict", 422, "do not fit", instances(ROW.replace("45.1", "Infinity"))),
    "predict-1e309": Row("POST", "/predict", 422, "do not fit", instances(ROW.replace("45.1", "1e309"))),
    "predict-number-as-list": Row("POST", "/predict", 422, "do not fit", instances(ROW.replace("45.1", "[1]"))),
    "predict-number-as-word": Row("POST", "/predict", 422, "do not fit", instances(ROW.replace("45.1", '"long"'))),
    "predict-non-utf8": Row(
        "POST", "/predict", 400, "not valid JSON", instances(ROW).replace(b"Biscoe", b"Bis\xffcoe")
    ),
    # Not in the table, because they are answered, not refused: a lone surrogate escape in a
    # category is an unseen category (200 with an unknown_category warning), and a UTF-8 byte
    # order mark before the JSON is skipped, as RFC 8259 allows.
    "predict-text-plain": Row("POST", "/predict", 415, "application/json", instances(ROW), content_type="text/plain"),
    # /predict has a body limit of its own (PREDICTQ_PREDICT_MAX_BYTES, its route's tests); the
    # general one is tested on /jobs and /retrain below.
    "predict-deep-nesting": Row("POST", "/predict", 400, "not valid JSON", b"[" * 100_000),
    "predict-version-nul": Row(
        "POST", "/predict", 404, "No model version", f'{{"model_version": "\\u0000", "instances": [{ROW}]}}'.encode()
    ),
    "predict-version-traversal": Row(
        "POST", "/predict", 404, "No model version", f'{{"model_version": "../../etc", "instances": [{ROW}]}}'.encode()
    ),
    "predict-version-4000-chars": Row(
        "POST",
        "/predict",
        404,
        "No model version",
        f'{{"model_version": "{"a" * 4000}", "instances": [{ROW}]}}'.encode(),
    ),
    "predict-version-number": Row(
        "POST", "/predict", 400, "must be a string", f'{{"model_version": 7, "instances": [{ROW}]}}'.encode()
    ),
    # --- batch jobs: JSON, CSV bodies and multipart uploads ---------------------------------
    "jobs-truncated-json": Row("POST", "/jobs", 400, "not valid JSON", b'{"instances": ['),
    "jobs-over-body-limit": Row(
        "POST", "/jobs", 413, f"{MAX_REQUEST_BYTES} bytes", instances(ROW.replace("Biscoe", "x" * MAX_REQUEST_BYTES))
    ),
    "jobs-id-column-traversal": Row(
        "POST", "/jobs", 422, "id_column", f'{{"id_column": "../../etc/passwd", "instances": [{ROW}]}}'.encode()
    ),
    "jobs-version-nul": Row(
        "POST", "/jobs", 404, "No model version", f'{{"model_version": "\\u0000", "instances": [{ROW}]}}'.encode()
    ),
    "csv-empty-file": Row("POST", "/jobs", 400, "empty", b"", content_type="text/csv"),
    "csv-header-only": Row("POST", "/jobs", 400, "no rows", csv(HEADER), content_type="text/csv"),
    "csv-ragged": Row("POST", "/jobs", 400, "CSV", csv(HEADER, CSV_ROW, CSV_ROW + ",1,2,3"), content_type="text/csv"),
    "csv-semicolons": Row(
        "POST",
        "/jobs",
        422,
        "lacks 7 column(s)",
        csv(HEADER.replace(",", ";"), CSV_ROW.replace(",", ";")),
        content_type="text/csv",
    ),
    "csv-non-utf8": Row(
        "POST",
        "/jobs",
        400,
        "UTF-8",
        csv(HEADER, "Bis\xffcoe,45.1,14.5,210,4500,male,2008").replace(b"\xc3\xbf", b"\xff"),
        content_type="text/csv",
    ),
    "csv-header-too-long": Row(
        "POST", "/jobs", 400, "header", csv(HEADER + "," + "x" * MAX_CSV_HEADER_BYTES, CSV_ROW), content_type="text/csv"
    ),
    "csv-too-many-columns": Row(
        "POST",
        "/jobs",
        400,
        "columns",
        csv(HEADER + "," + ",".join(f"c{i}" for i in range(MAX_CSV_COLUMNS)), CSV_ROW),
        content_type="text/csv",
    ),
    "csv-over-upload-limit": Row(
        "POST", "/jobs", 413, f"{MAX_UPLOAD_BYTES} bytes", csv(HEADER, *[CSV_ROW] * 2000), content_type="text/csv"
    ),
    "csv-version-nul": Row(
        "POST",
        "/jobs",
        404,
        "No model version",
        csv(HEADER, CSV_ROW),
        content_type="text/csv",
        query={"model_version": "\x00"},
    ),
    "csv-id-column-traversal": Row(
        "POST",
        "/jobs",
        422,
        "id_column",
        csv(HEADER, CSV_ROW),
        content_type="text/csv",
        query={"id_column": "../../etc/passwd"},
    ),
    "multipart-no-file": Row("POST", "/jobs", 400, "named 'file'", content_type=None, form={"id_column": "x"}),
    "multipart-ragged": Row("POST", "/jobs", 400, "CSV", content_type=None, form=upload(csv(HEADER, CSV_ROW + ",9,9"))),
    # --- odd job ids in every job path -----------------------------------------------------
    "job-unknown": Row("GET", f"/jobs/{UNKNOWN_JOB}", 404, "No job", content_type=None),
    "job-not-hex": Row("GET", "/jobs/not-a-job", 404, "No job", content_type=None),
    "job-upper-hex": Row("GET", f"/jobs/{'A' * 32}", 404, "No job", content_type=None),
    "job-nul": Row("GET", "/jobs/abc%00def", 404, "No job", content_type=None),
    "job-4000-chars": Row("GET", f"/jobs/{'a' * 4000}", 404, "No job", content_type=None),
    # An encoded slash is a slash to the router: no route matches, werkzeug's 404 as a problem.
    "job-traversal": Row("GET", "/jobs/..%2F..%2Fmodels", 404, "not found", content_type=None),
    "job-cancel-odd": Row("DELETE", "/jobs/..%2Fmodels", 404, "not found", content_type=None),
    "job-cancel-unknown": Row("DELETE", f"/jobs/{UNKNOWN_JOB}", 404, "No job", content_type=None),
    "job-result-odd": Row("GET", "/jobs/%00/result", 404, "No job", content_type=None),
    "job-result-unknown-csv": Row(
        "GET", f"/jobs/{UNKNOWN_JOB}/result", 404, "No job", content_type=None, query={"format": "csv"}
    ),
    # --- retraining options that name files, columns and estimators --------------------------
    "retrain-no-token": Row("POST", "/retrain", 401, "token", b"{}", token=False),
    "retrain-truncated-json": Row("POST", "/retrain", 400, "not valid JSON", b'{"data": "pen'),
    "retrain-over-body-limit": Row(
        "POST", "/retrain", 413, f"{MAX_REQUEST_BYTES} bytes", f'{{"data": "{"x" * MAX_REQUEST_BYTES}"}}'.encode()
    ),
    "retrain-data-nul": Row("POST", "/retrain", 422, "NUL", b'{"data": "penguins\\u0000.csv"}'),
    "retrain-data-traversal": Row("POST", "/retrain", 422, "under the data directory", b'{"data": "../../etc/passwd"}'),
    "retrain-data-absolute": Row("POST", "/retrain", 422, "under the data directory", b'{"data": "/etc/passwd"}'),
    "retrain-data-long-name": Row("POST", "/retrain", 422, "longer than 255", f'{{"data": "{"a" * 300}"}}'.encode()),
    "retrain-data-long-path": Row(
        "POST", "/retrain", 422, "longer than 4096", f'{{"data": "{"a/" * 3000}x"}}'.encode()
    ),
    "retrain-data-surrogate": Row("POST", "/retrain", 422, "UTF-8", b'{"data": "\\ud800.csv"}'),
    "retrain-data-missing": Row("POST", "/retrain", 422, "No file", b'{"data": "nope.csv"}'),
    "retrain-data-number": Row("POST", "/retrain", 400, "must be a string", b'{"data": 5}'),
    "retrain-target-list": Row("POST", "/retrain", 400, "must be a string", b'{"target": ["species"]}'),
    "retrain-activate-odd": Row("POST", "/retrain", 422, "activate must be one of", b'{"activate": "sometimes"}'),
    "retrain-policy-odd": Row("POST", "/retrain", 422, "out_of_range_policy", b'{"out_of_range_policy": "ignore"}'),
    "retrain-task-odd": Row("POST", "/retrain", 422, "classification or regression", b'{"task": "clustering"}'),
    "retrain-estimator-import": Row("POST", "/retrain", 422, "os.system", b'{"estimator": "os.system"}'),
    "retrain-params-list": Row("POST", "/retrain", 400, "'params' must be an object", b'{"params": [1]}'),
    "retrain-upload-empty": Row(
        "POST", "/retrain", 400, "empty", content_type=None, form=upload(b"", target="species")
    ),
    "retrain-upload-no-target": Row(
        "POST", "/retrain", 422, "not a column", content_type=None, form=upload(csv(HEADER, CSV_ROW), target="species")
    ),
    "retrain-upload-over-limit": Row(
        "POST",
        "/retrain",
        413,
        f"{MAX_UPLOAD_BYTES} bytes",
        content_type=None,
        form=upload(csv(HEADER, *[CSV_ROW] * 2000), target="species"),
    ),
    # --- model versions in paths -------------------------------------------------------------
    "model-nul": Row("GET", "/models/abc%00def", 404, "No model version", content_type=None),
    "model-traversal": Row("GET", "/models/..%2F..%2Fetc", 404, "not found", content_type=None),
    "model-4000-chars": Row("GET", f"/models/{'a' * 4000}", 404, "No model version", content_type=None),
    "model-report-nul": Row("GET", "/models/abc%00def/report", 404, "No model version", content_type=None),
    "activate-nul": Row("POST", "/models/abc%00def/activate", 404, "No model version", content_type=None),
    "activate-4000-chars": Row("POST", f"/models/{'a' * 4000}/activate", 404, "No model version", content_type=None),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """One app for the whole table (rows only read, or refused before anything is written)."""
    data_dir = tmp_path_factory.mktemp("hostile")
    options = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 10})
    train_version(ModelStore(LocalStorage(data_dir)), PENGUINS_CSV, options)
    shutil.copy(PENGUINS_CSV, data_dir / "penguins.csv")
    settings = Settings(
        data_dir=data_dir,
        broker_url="memory://",
        redis_url="redis://unused",
        admin_token=TOKEN,
        sync_max_rows=5,
        model_check_interval_s=0,
        dataset_path=data_dir / "penguins.csv",
        max_request_bytes=MAX_REQUEST_BYTES,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_csv_header_bytes=MAX_CSV_HEADER_BYTES,
        max_csv_columns=MAX_CSV_COLUMNS,
    )
    app = create_app(settings, redis_client=fakeredis.FakeRedis())
    app.testing = True
    return app


def resident_bytes() -> int:
    """This process's resident set size now (not its peak), from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def send(client: FlaskClient, row: Row):
    headers = dict(ADMIN) if row.token else {}
    kwargs: dict = {"query_string": row.query, "headers": headers}
    if row.form is not None:
        form = {
            name: (io.BytesIO(value[0]), value[1], value[2]) if isinstance(value, tuple) else value
            for name, value in row.form.items()
        }
        kwargs.update(data=form, content_type="multipart/form-data")
    elif row.body is not None:
        kwargs.update(data=row.body, content_type=row.content_type)
    return client.open(row.path, method=row.method, **kwargs)


@pytest.mark.parametrize("name", TABLE)
def test_hostile_request_gets_its_problem(app: Flask, name: str) -> None:
    """The row's status and phrase, as problem+json; never 5xx, never slow, memory bounded."""
    row = TABLE[name]
    before = resident_bytes()
    started = time.monotonic()

    response = send(app.test_client(), row)

    took = time.monotonic() - started
    grown = resident_bytes() - before
    body = response.get_json(force=True, silent=True) or {}
    assert response.status_code == row.status, (response.status_code, body)
    assert response.mimetype == PROBLEM_JSON
    assert body["status"] == row.status
    assert row.phrase in body["detail"], body
    assert took < ANSWER_WITHIN_S, f"answered after {took:.2f} s"
    assert grown < RSS_GROWTH_LIMIT_BYTES, f"resident memory grew by {grown / 2**20:.0f} MiB"

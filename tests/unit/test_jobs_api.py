"""Job, retrain and activate endpoints through the test client, on fakeredis and Celery's memory broker."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import fakeredis
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from api.errors import PROBLEM_JSON
from api.services import Services
from shared.batch import JobFiles, score_chunk, split_input, write_results
from shared.jobs import QUEUED
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.training import TrainingOptions
from worker.celery_app import BATCH_QUEUE, RETRAIN_TASK, SPLIT_TASK, TRAINING_QUEUE

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
CHUNK_ROWS = 2
# Upper bound for a queue message that carries a job id and nothing else.
SMALL_MESSAGE_BYTES = 300


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Two versions trained once per session: the first active, the second not.

    Returns the models directory to copy into each test's data dir, and both versions.
    """
    root = tmp_path_factory.mktemp("api-models")
    store = ModelStore(LocalStorage(root))
    options = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 20})
    active = train_version(store, PENGUINS_CSV, options)["version"]
    inactive = train_version(store, PENGUINS_CSV, options, activate="never")["version"]
    return root / "models", active, inactive


@pytest.fixture
def active_version(trained_models: tuple[Path, str, str]) -> str:
    return trained_models[1]


@pytest.fixture
def inactive_version(trained_models: tuple[Path, str, str]) -> str:
    return trained_models[2]


@pytest.fixture
def data_dir(tmp_path: Path, trained_models: tuple[Path, str, str]) -> Path:
    """A data directory holding the trained models and a copy of the demo table."""
    shutil.copytree(trained_models[0], tmp_path / "models")
    shutil.copy(PENGUINS_CSV, tmp_path / "penguins.csv")
    return tmp_path


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        broker_url="memory://",
        redis_url="redis://unused",
        admin_token=TOKEN,
        sync_max_rows=5,
        **overrides,
    )


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(settings: Settings, redis_client: fakeredis.FakeRedis) -> Flask:
    app = create_app(settings, redis_client=redis_client)
    app.testing = True
    drain(app, BATCH_QUEUE)  # the memory broker's queues are process-global: start empty
    drain(app, TRAINING_QUEUE)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def svc(app: Flask) -> Services:
    return app.extensions["predictq"]


@pytest.fixture
def rows() -> list[dict]:
    """Eight complete penguins as JSON rows, each with a zero-padded text id."""
    table = pd.read_csv(PENGUINS_CSV).dropna().drop(columns=["species"])
    picked = pd.concat([table.iloc[0:3], table.iloc[160:162], table.iloc[300:303]]).reset_index(drop=True)
    picked.insert(0, "penguin_id", [f"{i:03d}" for i in range(1, len(picked) + 1)])
    return json.loads(picked.to_json(orient="records"))


@pytest.fixture
def plain_rows(rows: list[dict]) -> list[dict]:
    """The same rows with features only, as /predict and jobs without id_column take them."""
    return [{k: v for k, v in row.items() if k != "penguin_id"} for row in rows]


@pytest.fixture
def rows_csv(rows: list[dict]) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode()


def drain(app: Flask, queue: str) -> list[dict]:
    """Take every message off a queue of the memory broker: task name, args and body size."""
    celery = app.extensions["predictq"].celery
    messages = []
    with celery.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args = message.decode()[0]
            messages.append({"task": message.headers["task"], "args": args, "bytes": len(message.body)})
    return messages


def job_dirs(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.jobs_dir.iterdir()) if settings.jobs_dir.exists() else []


def assert_problem(response: TestResponse, status: int, field: str | None = None) -> dict:
    """The response is a problem+json body with this status (and an error naming ``field``)."""
    assert response.status_code == status
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]]
    return body


def run_batch_job(svc: Services, job_id: str) -> None:
    """What the worker's split, score and finalize tasks do: the shared functions and the job store."""
    jobs = svc.jobs
    record = jobs.get(job_id)
    id_column = record.get("id_column")
    assert jobs.start(job_id)
    files = JobFiles(svc.settings.jobs_dir, job_id)
    rows, chunks = split_input(files, CHUNK_ROWS, id_column)
    jobs.update(job_id, total=rows, chunks=chunks, chunk_rows=CHUNK_ROWS)
    model = svc.store.load(record["model_version"])
    for chunk in range(chunks):
        jobs.record_chunk(job_id, chunk, score_chunk(files, chunk, model, CHUNK_ROWS, id_column))
    assert jobs.claim(job_id, "finalize")
    assert jobs.succeed(job_id, quality=write_results(files, chunks, model, job_id, id_column))


# --- submitting batch jobs -----------------------------------------------------------------


def test_json_job_is_accepted_and_queued(
    client: FlaskClient, app: Flask, svc: Services, settings: Settings, rows: list[dict], active_version: str
) -> None:
    """POST /jobs with JSON rows answers 202 with a status URL and leaves a queued record and input file."""
    response = client.post("/jobs", json={"instances": rows, "id_column": "penguin_id"})

    assert response.status_code == 202
    body = response.get_json()
    job_id = body["job_id"]
    assert body["status"] == QUEUED
    assert body["kind"] == "batch"
    assert body["status_url"].endswith(f"/jobs/{job_id}")
    assert response.headers["Location"] == body["status_url"]
    assert body["model_version"] == active_version
    assert body["progress"] == {"done": 0, "total": len(rows)}

    record = svc.jobs.get(job_id)
    assert record["status"] == QUEUED
    assert record["id_column"] == "penguin_id"
    assert json.loads(JobFiles(settings.jobs_dir, job_id).input_json.read_text()) == rows


def test_queue_message_is_a_reference_not_the_rows(
    client: FlaskClient, app: Flask, svc: Services, settings: Settings, plain_rows: list[dict]
) -> None:
    """The broker gets one small split message carrying the job id only; rows stay on disk."""
    job_id = client.post("/jobs", json={"instances": plain_rows * 50}).get_json()["job_id"]

    messages = drain(app, BATCH_QUEUE)
    assert [(m["task"], m["args"]) for m in messages] == [(SPLIT_TASK, [job_id])]
    assert messages[0]["bytes"] < SMALL_MESSAGE_BYTES
    assert JobFiles(settings.jobs_dir, job_id).input_json.stat().st_size > 50 * SMALL_MESSAGE_BYTES
    assert "instances" not in svc.jobs.get(job_id)
    assert drain(app, TRAINING_QUEUE) == []


def test_csv_body_job_is_accepted(client: FlaskClient, app: Flask, settings: Settings, rows_csv: bytes) -> None:
    """A text/csv body with id_column in the query string becomes a queued job with the upload on disk."""
    response = client.post("/jobs?id_column=penguin_id", data=rows_csv, content_type="text/csv")

    assert response.status_code == 202
    body = response.get_json()
    assert body["id_column"] == "penguin_id"
    assert response.headers["Location"] == body["status_url"]
    assert JobFiles(settings.jobs_dir, body["job_id"]).input_csv.read_bytes() == rows_csv
    assert [m["args"] for m in drain(app, BATCH_QUEUE)] == [[body["job_id"]]]


def test_multipart_file_job_is_accepted(
    client: FlaskClient, settings: Settings, rows_csv: bytes, inactive_version: str
) -> None:
    """A multipart upload in field 'file' with form options becomes a job pinned to the asked version."""
    response = client.post(
        "/jobs",
        data={"file": (io.BytesIO(rows_csv), "rows.csv"), "id_column": "penguin_id", "model_version": inactive_version},
        content_type="multipart/form-data",
    )

    assert response.status_code == 202
    body = response.get_json()
    assert body["model_version"] == inactive_version
    assert body["id_column"] == "penguin_id"
    assert JobFiles(settings.jobs_dir, body["job_id"]).input_csv.read_bytes() == rows_csv


def test_predict_over_sync_limit_becomes_a_job(client: FlaskClient, app: Flask, plain_rows: list[dict]) -> None:
    """POST /predict with more than sync_max_rows rows answers 202 with a queued batch job."""
    response = client.post("/predict", json={"instances": plain_rows})

    assert response.status_code == 202
    body = response.get_json()
    assert body["kind"] == "batch"
    assert body["status"] == QUEUED
    assert response.headers["Location"] == body["status_url"]
    assert [m["args"] for m in drain(app, BATCH_QUEUE)] == [[body["job_id"]]]


def test_predict_within_sync_limit_answers_at_once(client: FlaskClient, app: Flask, plain_rows: list[dict]) -> None:
    """POST /predict with at most sync_max_rows rows is answered directly and queues nothing."""
    response = client.post("/predict", json={"instances": plain_rows[:5]})

    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) == 5
    assert drain(app, BATCH_QUEUE) == []


# --- bad submissions fail fast -------------------------------------------------------------


HEADER = b"penguin_id,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"


@pytest.mark.parametrize(
    ("data", "status", "field"),
    [
        (b"", 400, None),
        (HEADER, 400, None),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), 400, None),
        (b"penguin_id,island,bill_length_mm\n001,Dream,40.1\n", 422, "bill_depth_mm"),
    ],
    ids=["empty", "header-only", "binary", "missing-column"],
)
def test_bad_csv_body_fails_fast_without_job(
    client: FlaskClient, app: Flask, settings: Settings, data: bytes, status: int, field: str | None
) -> None:
    """An unusable text/csv upload is refused with a problem body; no job directory or message remains."""
    response = client.post("/jobs", data=data, content_type="text/csv")

    assert_problem(response, status, field)
    assert job_dirs(settings) == []
    assert drain(app, BATCH_QUEUE) == []


def test_absent_id_column_fails_fast_without_job(client: FlaskClient, settings: Settings, rows_csv: bytes) -> None:
    """A multipart upload naming an id_column that is not in the CSV is a 422 naming id_column."""
    response = client.post(
        "/jobs",
        data={"file": (io.BytesIO(rows_csv), "rows.csv"), "id_column": "tag"},
        content_type="multipart/form-data",
    )

    assert_problem(response, 422, "tag")
    assert job_dirs(settings) == []


def test_multipart_without_file_field_is_bad_request(client: FlaskClient, settings: Settings, rows_csv: bytes) -> None:
    """A multipart submission whose CSV is not in a field named 'file' is a 400 saying so."""
    response = client.post(
        "/jobs", data={"upload": (io.BytesIO(rows_csv), "rows.csv")}, content_type="multipart/form-data"
    )

    assert "'file'" in assert_problem(response, 400)["detail"]
    assert job_dirs(settings) == []


def test_upload_over_limit_is_413_without_job(data_dir: Path, redis_client: fakeredis.FakeRedis) -> None:
    """A CSV body larger than max_upload_bytes is a 413 problem and leaves no job directory."""
    settings = make_settings(data_dir, max_upload_bytes=1024)
    client = create_app(settings, redis_client=redis_client).test_client()
    response = client.post("/jobs", data=HEADER + b"001,Dream,40,18,190,3800,male,2008\n" * 40, content_type="text/csv")

    assert_problem(response, 413)
    assert job_dirs(settings) == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"rows": []}, 400, None),
        ({"instances": []}, 400, None),
        ({"instances": [{"island": "Dream"}]}, 422, "bill_length_mm"),
        ({"instances": [{"island": "Dream", "wingspan": 3}]}, 422, "wingspan"),
    ],
    ids=["no-instances", "empty", "missing-feature", "unknown-feature"],
)
def test_bad_json_job_fails_fast_without_job(
    client: FlaskClient, settings: Settings, redis_client: fakeredis.FakeRedis, body: dict, status: int, field
) -> None:
    """JSON rows of the wrong shape or schema are refused before anything is written or recorded."""
    assert_problem(client.post("/jobs", json=body), status, field)
    assert job_dirs(settings) == []
    assert redis_client.keys("predictq:job:*") == []


def test_json_rows_without_the_id_column_are_refused(client: FlaskClient, settings: Settings, rows: list[dict]) -> None:
    """With id_column given, a row lacking it is a 422 naming the id column."""
    del rows[3]["penguin_id"]
    assert_problem(client.post("/jobs", json={"instances": rows, "id_column": "penguin_id"}), 422, "penguin_id")
    assert job_dirs(settings) == []


@pytest.mark.parametrize("option", ["model_version", "id_column"])
@pytest.mark.parametrize("value", [5, ["penguin_id"], {"a": 1}], ids=["number", "list", "object"])
def test_non_text_job_options_are_bad_request(
    client: FlaskClient, settings: Settings, plain_rows: list[dict], option: str, value: object
) -> None:
    """model_version or id_column sent as a JSON number, list or object is a 400 naming it, not a 500."""
    assert_problem(client.post("/jobs", json={"instances": plain_rows, option: value}), 400, option)
    assert job_dirs(settings) == []


def test_unknown_model_version_is_404(
    client: FlaskClient, settings: Settings, plain_rows: list[dict], rows_csv
) -> None:
    """A job pinned to a version that does not exist is a 404 problem, for JSON and CSV alike."""
    body = assert_problem(
        client.post("/jobs", json={"instances": plain_rows, "model_version": "20990101T000000Z-abc"}), 404
    )
    assert "20990101T000000Z-abc" in body["detail"]
    assert_problem(client.post("/jobs?model_version=nope", data=rows_csv, content_type="text/csv"), 404)
    assert_problem(client.post("/jobs", json={"instances": plain_rows, "model_version": "../models"}), 404)
    assert job_dirs(settings) == []


# --- polling, cancelling, results ----------------------------------------------------------


def test_unknown_job_is_404(client: FlaskClient) -> None:
    """GET, DELETE and result of a job id never issued are 404 problems."""
    for response in (client.get("/jobs/nope"), client.delete("/jobs/nope"), client.get("/jobs/nope/result")):
        assert "nope" in assert_problem(response, 404)["detail"]


def test_result_of_queued_job_is_409(client: FlaskClient, plain_rows: list[dict]) -> None:
    """Asking for a result before the job succeeded is a 409 problem telling its status."""
    job_id = client.post("/jobs", json={"instances": plain_rows}).get_json()["job_id"]
    assert "queued" in assert_problem(client.get(f"/jobs/{job_id}/result"), 409)["detail"]


def test_get_job_reports_queued_status(client: FlaskClient, plain_rows: list[dict]) -> None:
    """GET /jobs/<id> of a new job shows it queued, with no result URL yet."""
    job_id = client.post("/jobs", json={"instances": plain_rows}).get_json()["job_id"]
    response = client.get(f"/jobs/{job_id}")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == QUEUED
    assert "result_url" not in body


def test_cancel_then_cancel_again(client: FlaskClient, svc: Services, plain_rows: list[dict]) -> None:
    """DELETE cancels a queued job (200, cancelled); a second DELETE is a 409 problem."""
    job_id = client.post("/jobs", json={"instances": plain_rows}).get_json()["job_id"]

    first = client.delete(f"/jobs/{job_id}")
    assert first.status_code == 200
    assert first.get_json()["status"] == "cancelled"
    assert first.get_json()["finished_at"]
    assert "cancelled" in assert_problem(client.delete(f"/jobs/{job_id}"), 409)["detail"]
    assert svc.jobs.get(job_id)["status"] == "cancelled"
    assert_problem(client.get(f"/jobs/{job_id}/result"), 409)


def test_cancelled_job_stays_cancelled_when_the_worker_runs_late(
    client: FlaskClient, svc: Services, plain_rows: list[dict]
) -> None:
    """A job cancelled before its split task ran cannot be started by that task."""
    job_id = client.post("/jobs", json={"instances": plain_rows}).get_json()["job_id"]
    client.delete(f"/jobs/{job_id}")

    assert not svc.jobs.start(job_id)
    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "cancelled"


def test_succeeded_json_job_reports_and_serves_its_result(
    client: FlaskClient, svc: Services, rows: list[dict], active_version: str
) -> None:
    """After the worker steps ran, GET /jobs/<id> shows progress and a result URL; the result is JSON."""
    job_id = client.post("/jobs", json={"instances": rows, "id_column": "penguin_id"}).get_json()["job_id"]
    run_batch_job(svc, job_id)

    status = client.get(f"/jobs/{job_id}").get_json()
    assert status["status"] == "succeeded"
    assert status["progress"] == {"done": len(rows), "total": len(rows)}
    assert status["result_url"].endswith(f"/jobs/{job_id}/result")
    assert status["data_quality"] == {}
    assert status["finished_at"]

    with client.get(f"/jobs/{job_id}/result") as response:
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        result = response.get_json()
    assert result["job_id"] == job_id
    assert result["model_version"] == active_version
    assert len(result["predictions"]) == len(rows)
    assert set(result["predictions"]) <= set(CLASSES)
    assert result["ids"] == [row["penguin_id"] for row in rows]


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?format=csv", {}), ("", {"Accept": "text/csv"})],
    ids=["format-query", "accept-header"],
)
def test_succeeded_csv_job_serves_csv_result(
    client: FlaskClient, svc: Services, rows: list[dict], rows_csv: bytes, query: str, headers: dict
) -> None:
    """?format=csv or Accept: text/csv returns result.csv: input columns, prediction, probabilities, ids intact."""
    job_id = client.post("/jobs?id_column=penguin_id", data=rows_csv, content_type="text/csv").get_json()["job_id"]
    run_batch_job(svc, job_id)

    with client.get(f"/jobs/{job_id}/result{query}", headers=headers) as response:
        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        text = response.get_data(as_text=True)
    result = pd.read_csv(io.StringIO(text), dtype={"penguin_id": str})
    assert list(result.columns) == [*rows[0], "prediction", *(f"probability_{c}" for c in CLASSES)]
    assert result["penguin_id"].tolist() == [row["penguin_id"] for row in rows]


def test_json_result_is_the_default_for_browsers(client: FlaskClient, svc: Services, plain_rows: list[dict]) -> None:
    """An Accept header that prefers neither type (*/*) gets the JSON result."""
    job_id = client.post("/jobs", json={"instances": plain_rows}).get_json()["job_id"]
    run_batch_job(svc, job_id)

    with client.get(f"/jobs/{job_id}/result", headers={"Accept": "*/*"}) as response:
        assert response.mimetype == "application/json"
        assert len(response.get_json()["predictions"]) == len(plain_rows)


def test_finished_job_cannot_be_cancelled(client: FlaskClient, svc: Services, plain_rows: list[dict]) -> None:
    """DELETE of a succeeded job is a 409 problem and the job stays succeeded."""
    job_id = client.post("/jobs", json={"instances": plain_rows}).get_json()["job_id"]
    run_batch_job(svc, job_id)

    assert "succeeded" in assert_problem(client.delete(f"/jobs/{job_id}"), 409)["detail"]
    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "succeeded"


# --- retrain and activate ------------------------------------------------------------------


def test_retrain_without_token_is_401(client: FlaskClient, redis_client: fakeredis.FakeRedis) -> None:
    """POST /retrain with no Authorization header is a 401 problem asking for a Bearer token."""
    response = client.post("/retrain", json={"data": "penguins.csv"})

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert redis_client.keys("predictq:job:*") == []


@pytest.mark.parametrize("authorization", ["Bearer wrong", "Basic s3cret", TOKEN, "Bearer s3cret2"])
def test_retrain_with_wrong_token_is_401(client: FlaskClient, authorization: str) -> None:
    """A wrong token, another scheme or a bare token is a 401 problem with WWW-Authenticate."""
    response = client.post("/retrain", json={"data": "penguins.csv"}, headers={"Authorization": authorization})

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_retrain_never_imports_a_dotted_path(
    client: FlaskClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An estimator given as a class path is a 422 problem and the named module is never imported."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "predictq_probe_estimators.py").write_text("class Forest:\n    def fit(self): ...\n")
    monkeypatch.syspath_prepend(str(plugins))

    response = client.post(
        "/retrain", json={"data": "penguins.csv", "estimator": "predictq_probe_estimators.Forest"}, headers=ADMIN
    )

    assert "command line" in assert_problem(response, 422)["detail"]
    assert "predictq_probe_estimators" not in sys.modules
    assert job_dirs(settings) == []


@pytest.mark.parametrize("data", ["../penguins.csv", "/etc/passwd", "models/../../x.csv"])
def test_retrain_data_outside_data_dir_is_422(client: FlaskClient, settings: Settings, data: str) -> None:
    """A data path that resolves outside the data directory is a 422 naming the data field."""
    assert_problem(client.post("/retrain", json={"data": data}, headers=ADMIN), 422, "data")
    assert job_dirs(settings) == []


def test_retrain_missing_data_file_is_422(client: FlaskClient) -> None:
    """A data path inside the data directory that is not a file is a 422 naming the data field."""
    assert_problem(client.post("/retrain", json={"data": "nothing.csv"}, headers=ADMIN), 422, "data")


def test_retrain_unknown_activation_rule_is_422(client: FlaskClient) -> None:
    """An activate value outside if_better/always/never is a 422 naming the activate field."""
    response = client.post("/retrain", json={"data": "penguins.csv", "activate": "sometimes"}, headers=ADMIN)
    assert_problem(response, 422, "activate")


def test_retrain_unknown_out_of_range_policy_is_422(client: FlaskClient, redis_client) -> None:
    """An out_of_range_policy outside warn/clip/reject is a 422 naming it, not a model saved with it."""
    response = client.post("/retrain", json={"data": "penguins.csv", "out_of_range_policy": "ignore"}, headers=ADMIN)
    assert_problem(response, 422, "out_of_range_policy")
    assert redis_client.keys("predictq:job:*") == []


@pytest.mark.parametrize("field", ["estimator", "data", "target", "task", "activate", "out_of_range_policy"])
def test_retrain_non_text_field_is_bad_request(client: FlaskClient, settings: Settings, field: str) -> None:
    """A retrain option sent as a JSON number is a 400 naming it, not a 500."""
    response = client.post("/retrain", json={"data": "penguins.csv", field: 5}, headers=ADMIN)
    assert_problem(response, 400, field)
    assert job_dirs(settings) == []


def test_retrain_bad_estimator_params_are_422(client: FlaskClient) -> None:
    """Parameters the estimator does not take are refused at submission, not in the worker."""
    response = client.post(
        "/retrain", json={"data": "penguins.csv", "estimator": "random_forest", "params": {"n_trees": 3}}, headers=ADMIN
    )
    assert "n_trees" in assert_problem(response, 422)["detail"]


def test_valid_retrain_is_queued_on_the_training_queue(
    client: FlaskClient, app: Flask, svc: Services, settings: Settings
) -> None:
    """A valid retrain is a 202 retrain job whose record holds the resolved data path, sent to the training queue."""
    response = client.post(
        "/retrain",
        json={"data": "penguins.csv", "estimator": "random_forest", "params": {"n_estimators": 20}},
        headers=ADMIN,
    )

    assert response.status_code == 202
    body = response.get_json()
    assert body["kind"] == "retrain"
    assert body["status"] == QUEUED
    assert response.headers["Location"] == body["status_url"]
    options = svc.jobs.get(body["job_id"])["options"]
    assert options["data_path"] == str((settings.data_dir / "penguins.csv").resolve())
    assert options["activate"] == "if_better"
    assert options["target"] == "species"
    assert options["params"] == {"n_estimators": 20}
    assert [(m["task"], m["args"]) for m in drain(app, TRAINING_QUEUE)] == [(RETRAIN_TASK, [body["job_id"]])]
    assert drain(app, BATCH_QUEUE) == []


def test_retrain_with_uploaded_csv_is_queued(client: FlaskClient, svc: Services, settings: Settings) -> None:
    """A multipart training upload is saved under the job's directory and the job points at it."""
    response = client.post(
        "/retrain",
        data={"file": (io.BytesIO(PENGUINS_CSV.read_bytes()), "penguins.csv"), "target": "sex", "activate": "never"},
        content_type="multipart/form-data",
        headers=ADMIN,
    )

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    training_csv = JobFiles(settings.jobs_dir, job_id).training_csv
    assert training_csv.read_bytes() == PENGUINS_CSV.read_bytes()
    options = svc.jobs.get(job_id)["options"]
    assert options["data_path"] == str(training_csv.resolve())
    assert (options["target"], options["activate"]) == ("sex", "never")


def test_retrain_upload_without_target_column_is_422(client: FlaskClient, settings: Settings) -> None:
    """A training upload that lacks the target column is a 422 naming target, with no job left behind."""
    response = client.post(
        "/retrain",
        data={"file": (io.BytesIO(b"a,b\n1,2\n"), "t.csv"), "target": "species"},
        content_type="multipart/form-data",
        headers=ADMIN,
    )
    assert_problem(response, 422, "target")
    assert job_dirs(settings) == []


def test_activate_switches_the_active_version(
    client: FlaskClient, svc: Services, active_version: str, inactive_version: str
) -> None:
    """POST /models/<v>/activate with the token answers 200 and moves the store's active pointer."""
    assert svc.store.active_version() == active_version

    response = client.post(f"/models/{inactive_version}/activate", headers=ADMIN)

    assert response.status_code == 200
    assert response.get_json() == {"active_version": inactive_version}
    assert svc.store.active_version() == inactive_version


def test_activate_needs_the_token_and_a_real_version(
    client: FlaskClient, svc: Services, active_version: str, inactive_version: str
) -> None:
    """Activation without the token is 401 and of an unknown version 404; neither moves the pointer."""
    response = client.post(f"/models/{inactive_version}/activate")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_problem(client.post("/models/20990101T000000Z-abc/activate", headers=ADMIN), 404)
    assert svc.store.active_version() == active_version


# --- token for prediction ------------------------------------------------------------------


@pytest.fixture
def locked_client(data_dir: Path, redis_client: fakeredis.FakeRedis) -> FlaskClient:
    """A client of an app that requires the token for /predict and /jobs too."""
    app = create_app(make_settings(data_dir, require_token_for_predict=True), redis_client=redis_client)
    app.testing = True
    drain(app, BATCH_QUEUE)
    return app.test_client()


def test_locked_predict_and_jobs_need_the_token(locked_client: FlaskClient, plain_rows: list[dict]) -> None:
    """With require_token_for_predict, /predict and every /jobs route are 401 without the token."""
    responses = [
        locked_client.post("/predict", json={"instances": plain_rows[:2]}),
        locked_client.post("/jobs", json={"instances": plain_rows}),
        locked_client.get("/jobs/any"),
        locked_client.delete("/jobs/any"),
        locked_client.get("/jobs/any/result"),
    ]
    for response in responses:
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_locked_predict_and_jobs_accept_the_token(locked_client: FlaskClient, plain_rows: list[dict]) -> None:
    """With require_token_for_predict, the same requests succeed when they carry the token."""
    assert locked_client.post("/predict", json={"instances": plain_rows[:2]}, headers=ADMIN).status_code == 200
    submitted = locked_client.post("/jobs", json={"instances": plain_rows}, headers=ADMIN)
    assert submitted.status_code == 202
    assert locked_client.get(f"/jobs/{submitted.get_json()['job_id']}", headers=ADMIN).status_code == 200


def test_unlocked_predict_needs_no_token(client: FlaskClient, plain_rows: list[dict]) -> None:
    """By default /predict answers without any Authorization header."""
    assert client.post("/predict", json={"instances": plain_rows[:2]}).status_code == 200

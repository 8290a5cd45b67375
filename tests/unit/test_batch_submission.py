"""Batch submissions refused at POST /jobs, as problem JSON and before any job exists: inputs whose
columns the result would overwrite, and CSV headers too long or too wide to parse."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import fakeredis
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from api.errors import PROBLEM_JSON
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.training import TrainingOptions
from worker.celery_app import BATCH_QUEUE

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
# A request that parsed a million-column header took over a gigabyte; refusing it takes this much.
REFUSAL_MEMORY_BYTES = 32 * 1024 * 1024


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("submission-models")
    options = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 10})
    train_version(ModelStore(LocalStorage(root)), PENGUINS_CSV, options)
    return root / "models"


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    shutil.copytree(models_dir, tmp_path / "models")
    return Settings(data_dir=tmp_path, broker_url="memory://", redis_url="redis://unused")


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(settings: Settings, redis_client: fakeredis.FakeRedis) -> Flask:
    app = create_app(settings, redis_client=redis_client)
    app.testing = True
    queued(app)  # the memory broker's queues are process-global: start empty
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def queued(app: Flask) -> list[str]:
    """Take every message off the batch queue of the memory broker; their task names."""
    names = []
    with app.extensions["predictq"].celery.connection_for_read() as connection:
        while (message := connection.default_channel.basic_get(BATCH_QUEUE, no_ack=True)) is not None:
            names.append(message.headers["task"])
    return names


@pytest.fixture
def no_job_made(app: Flask, redis_client: fakeredis.FakeRedis, settings: Settings):
    """Check, after the request, that no job record, queued message or job file exists."""

    def check() -> None:
        assert redis_client.keys("predictq:job:*") == []
        assert queued(app) == []
        assert not settings.jobs_dir.exists() or not any(p.is_file() for p in settings.jobs_dir.rglob("*"))

    return check


def problem(response: TestResponse, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_JSON
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def penguins(count: int = 5) -> pd.DataFrame:
    return pd.read_csv(PENGUINS_CSV).drop(columns="species").head(count)


def post_csv(client: FlaskClient, body: bytes, **query: str) -> TestResponse:
    return client.post("/jobs", data=body, content_type="text/csv", query_string=query)


def test_csv_with_a_prediction_column_is_refused(client: FlaskClient, no_job_made) -> None:
    """A CSV column named prediction, which result.csv would overwrite, is a 422 naming it; no job is made."""
    body = problem(post_csv(client, penguins().assign(prediction="mine").to_csv(index=False).encode()), 422)

    assert body["title"] == "Invalid input"
    assert "['prediction']" in body["detail"] and "rename" in body["detail"]
    assert body["errors"] == [
        {
            "message": "the result has its own column of this name; rename the input column",
            "row": None,
            "field": "prediction",
        }
    ]
    no_job_made()


@pytest.mark.parametrize("as_json", [False, True], ids=["csv", "json"])
def test_an_input_column_named_like_a_probability_column_is_refused(
    client: FlaskClient, no_job_made, as_json: bool
) -> None:
    """probability_<class> of one of the model's classes would be overwritten too: refused at submission."""
    rows = penguins().assign(probability_Adelie=0.5)
    if as_json:
        records = json.loads(rows.to_json(orient="records"))
        response = client.post("/jobs", json={"instances": records, "id_column": "probability_Adelie"})
    else:
        response = post_csv(client, rows.to_csv(index=False).encode())

    body = problem(response, 422)

    assert [error["field"] for error in body["errors"]] == ["probability_Adelie"]
    no_job_made()


def test_json_rows_whose_id_column_is_prediction_are_refused(client: FlaskClient, no_job_made) -> None:
    """JSON rows carrying a prediction key (here as id_column) are a 422 naming it; no job is made."""
    rows = [{"prediction": f"r{n}", **row} for n, row in enumerate(json.loads(penguins().to_json(orient="records")))]

    body = problem(client.post("/jobs", json={"instances": rows, "id_column": "prediction"}), 422)

    assert [error["field"] for error in body["errors"]] == ["prediction"]
    no_job_made()


def test_a_million_column_header_is_refused_cheaply(client: FlaskClient, no_job_made) -> None:
    """The 7.5 MiB upload whose header has a million columns is a 400 naming the setting, and refusing it
    allocates a few megabytes, not the gigabyte parsing it took."""
    header = ",".join(f"c{n}" for n in range(1_000_000)).encode()
    upload = header + b"\n" + b"1," * 999_999 + b"1\n"
    tracemalloc.start()
    try:
        response = post_csv(client, upload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    body = problem(response, 400)
    assert "PREDICTQ_MAX_CSV_HEADER_BYTES" in body["detail"]
    assert peak < REFUSAL_MEMORY_BYTES + 2 * len(upload), peak  # the body the test holds, counted twice
    no_job_made()


def test_a_header_with_too_many_columns_is_refused(client: FlaskClient, no_job_made) -> None:
    """2,001 short column names fit the byte limit but not the column limit: a 400 naming the count."""
    header = ",".join(f"c{n}" for n in range(2_001)).encode()

    body = problem(post_csv(client, header + b"\n" + b"1," * 2_000 + b"1\n"), 400)

    assert "2001 columns; at most 2000" in body["detail"]
    assert "PREDICTQ_MAX_CSV_COLUMNS" in body["detail"]
    no_job_made()


def test_a_header_naming_a_column_twice_is_refused(client: FlaskClient, no_job_made) -> None:
    """A repeated column name is a 422 naming it, not a job that scores one of the two."""
    table = penguins()
    upload = table.to_csv(index=False).replace("island,", "island,island_x,", 1)
    upload = upload.replace("island_x", "island")
    lines = upload.splitlines()
    lines[1:] = [line.replace(",", ",Dream,", 1) for line in lines[1:]]

    body = problem(post_csv(client, ("\n".join(lines) + "\n").encode()), 422)

    assert [error["field"] for error in body["errors"]] == ["island"]
    no_job_made()

"""JSON log lines, request ids through the test client, and job tags on worker task lines."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError

from api import create_app
from shared.jobs import JobStore
from shared.logs import (
    ContextFilter,
    JsonLineFormatter,
    PredictqHandler,
    TextFormatter,
    bind_context,
    clear_context,
    configure_logging,
)
from shared.settings import Settings
from shared.training import TrainedModel
from worker.celery_app import BATCH_QUEUE
from worker.logs import bind_task, unbind_task
from worker.tasks import _live_job

PENGUIN = {
    "island": "Dream",
    "bill_length_mm": 50.6,
    "bill_depth_mm": 19.4,
    "flipper_length_mm": 193,
    "body_mass_g": 3800,
    "sex": "male",
    "year": 2007,
}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
REQUEST_LOGGER = "api.request_log"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, broker_url="memory://", redis_url="redis://unused")


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(
    settings: Settings, redis_client: fakeredis.FakeRedis, species_model: TrainedModel, save_model: Callable[..., str]
) -> Iterator[Flask]:
    save_model(species_model)
    app = create_app(settings, redis_client=redis_client)
    app.testing = True
    yield app
    celery = app.extensions["predictq"].celery
    with celery.connection_for_read() as connection:  # the memory broker is process-global: leave it empty
        while connection.default_channel.basic_get(BATCH_QUEUE, no_ack=True) is not None:
            pass


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict]]]:
    """Every record reaching the root logger at INFO or above, formatted as predictq writes it, parsed back."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)
    clear_context()


def request_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == REQUEST_LOGGER]


def test_request_id_is_echoed_and_on_the_log_line(client: FlaskClient, log_lines: Callable[[], list[dict]]) -> None:
    """A valid X-Request-ID comes back in the header and tags the request's JSON log line, with the model version."""
    response = client.post("/predict", json={"instances": [PENGUIN]}, headers={"X-Request-ID": "req-42.a:b_c"})

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-42.a:b_c"
    (line,) = request_lines(log_lines())
    assert line["request_id"] == "req-42.a:b_c"
    assert line["model_version"] == response.get_json()["model_version"]
    assert (line["level"], line["message"], line["status"], line["endpoint"]) == (
        "INFO",
        "POST /predict 200",
        200,
        "predict.predict",
    )
    assert line["timestamp"].endswith("Z")
    assert line["duration_ms"] >= 0


def test_request_id_is_generated_when_absent(client: FlaskClient, log_lines: Callable[[], list[dict]]) -> None:
    """Without the header the API makes an id, returns it and logs it; each request gets its own."""
    first = client.get("/models")
    second = client.get("/models")

    assert GENERATED_ID.fullmatch(first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert [line["request_id"] for line in request_lines(log_lines())] == [
        first.headers["X-Request-ID"],
        second.headers["X-Request-ID"],
    ]


@pytest.mark.parametrize(
    "header",
    ["has spaces", "x" * 65, "quote\"and'semicolon;", "-starts-with-dash", "new\\nline", "ünïcode", ""],
)
def test_invalid_request_id_is_replaced(client: FlaskClient, log_lines: Callable[[], list[dict]], header: str) -> None:
    """An X-Request-ID that is too long or not plain ASCII letters, digits and ._:- is replaced by a new id."""
    response = client.get("/models", headers={"X-Request-ID": header})

    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])
    (line,) = [line for line in log_lines() if line["logger"] == REQUEST_LOGGER]
    assert line["request_id"] == response.headers["X-Request-ID"]


def test_job_created_in_a_request_stores_its_request_id(
    client: FlaskClient, app: Flask, log_lines: Callable[[], list[dict]]
) -> None:
    """A job submitted with an X-Request-ID keeps the id on its record; the request's log lines name the job."""
    response = client.post("/jobs", json={"instances": [PENGUIN]}, headers={"X-Request-ID": "batch-7"})

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert app.extensions["predictq"].jobs.get(job_id)["request_id"] == "batch-7"
    lines = [line for line in log_lines() if line["logger"].startswith("api.")]
    assert [line["message"] for line in lines] == [f"queued batch job {job_id}", "POST /jobs 202"]
    assert all(line["request_id"] == "batch-7" and line["job_id"] == job_id for line in lines)


def test_worker_task_lines_carry_job_request_and_model(log_lines: Callable[[], list[dict]]) -> None:
    """A task's lines carry its job id, and the request id and model version of its record; later lines none."""
    jobs = JobStore(fakeredis.FakeRedis(), 3600)
    job_id = "0f" * 16  # tasks take only ids of the form the API makes
    jobs.create(job_id, "batch", request_id="req-9", model_version="v1")
    task_log = logging.getLogger("worker.tasks")

    bind_task(task_id="celery-id", task=None, args=[job_id, 0])
    assert _live_job(SimpleNamespace(jobs=jobs), job_id) is not None
    task_log.info("scoring")
    unbind_task(task_id="celery-id", task=None)
    task_log.info("idle")

    scoring, idle = log_lines()
    assert (scoring["job_id"], scoring["request_id"], scoring["model_version"]) == (job_id, "req-9", "v1")
    assert not {"job_id", "request_id", "model_version"} & idle.keys()


def test_configure_logging_replaces_only_its_own_handler() -> None:
    """Configuring twice leaves one predictq handler on the root logger, at the configured level, beside others."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    other = logging.NullHandler()
    root.addHandler(other)
    try:
        configure_logging(Settings(log_level="warning"))
        configure_logging(Settings(log_level="debug", log_format="text"))

        ours = [h for h in root.handlers if isinstance(h, PredictqHandler)]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, TextFormatter)
        assert other in root.handlers
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def test_text_format_puts_tags_after_the_message() -> None:
    """The text format is one readable line with the tags in brackets."""
    record = logging.LogRecord("api", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    bind_context(request_id="r1", job_id="j1")
    try:
        ContextFilter().filter(record)
    finally:
        clear_context()

    assert TextFormatter().format(record).endswith(" INFO api: hello there [request_id=r1 job_id=j1]")


def test_exceptions_stay_on_one_json_line() -> None:
    """A logged exception is one JSON object whose exc_info holds the traceback."""
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("api", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    line = JsonLineFormatter().format(record)

    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == "failed"
    assert "ValueError: boom" in body["exc_info"]


def test_log_settings_are_validated() -> None:
    """log_level is case-insensitive; an unknown level or format is refused."""
    assert Settings(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ValidationError):
        Settings(log_level="chatty")
    with pytest.raises(ValidationError):
        Settings(log_format="xml")


def test_probes_and_scrapes_are_logged_at_debug(client: FlaskClient, log_lines: Callable[[], list[dict]]) -> None:
    """/healthz, /readyz and /metrics, hit every few seconds, stay out of an INFO log; other requests do not."""
    for path in ("/healthz", "/readyz", "/metrics", "/models"):
        assert client.get(path).status_code == 200

    assert [line["message"] for line in request_lines(log_lines())] == ["GET /models 200"]


def test_a_value_json_cannot_hold_natively_still_makes_one_line() -> None:
    """An extra the fast encoder refuses (an integer beyond 64 bits) is written, not lost."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    record = logging.LogRecord("predictq.test", logging.INFO, __file__, 1, "rows %s", (3,), None)
    record.huge = 10**30

    handler.emit(record)

    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["huge"] == 10**30
    assert json.loads(line)["message"] == "rows 3"

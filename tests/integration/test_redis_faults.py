"""A real Redis frozen with SIGSTOP while the API serves, then thawed with SIGCONT.

A frozen server keeps its TCP connections open and accepts new ones (the kernel completes
the handshake), so nothing fails fast: only the API's own timeouts stand between a client
and a hang. The API here is built as production builds it, from settings alone, so it uses
its own bounded Redis client and Celery producer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from predictq.redis_server import start_server
from shared.settings import Settings

pytestmark = pytest.mark.integration

# The bound for an answer while Redis is frozen.
ANSWER_WITHIN_S = 2.0
STOP_TIMEOUT_S = 20.0
ROW = {
    "island": "Biscoe",
    "bill_length_mm": 45.1,
    "bill_depth_mm": 14.5,
    "flipper_length_mm": 210,
    "body_mass_g": 4500,
    "sex": "male",
    "year": 2008,
}


def stop_process(process: subprocess.Popen) -> None:
    """Thaw (a stopped process ignores SIGTERM), terminate, wait with a bound, then kill."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A Redis server of this test's own, so freezing it stops no other test's server."""
    directory = tmp_path / "redis"
    with open(tmp_path / "redis.log", "wb") as log:
        process, url = start_server(directory, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, url
    finally:
        stop_process(process)


@pytest.fixture
def redis_url(redis_process: tuple[subprocess.Popen, str]) -> str:
    """Replaces the session server: the settings and worker fixtures use this one."""
    return redis_process[1]


@pytest.fixture
def api(settings: Settings, trained_version: str) -> Iterator[Flask]:
    app = create_app(settings)  # no client handed in: the API's own bounded ones
    app.testing = True
    yield app
    services = app.extensions["predictq"]
    services.celery.close()
    services.jobs.client.close()


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_frozen_redis_costs_jobs_a_quick_503_and_predict_nothing(
    api: Flask, redis_process: tuple[subprocess.Popen, str], worker, wait_for_job, check_problem
) -> None:
    """With Redis stopped: /predict answers, /jobs is a 503 within 2 s, /readyz stays 200 naming Redis as
    unreachable; after SIGCONT the same process queues and finishes jobs again, with no restart."""
    client: FlaskClient = api.test_client()
    process = redis_process[0]
    before = client.get("/readyz").get_json()
    assert before["components"]["redis"] == {"status": "ok"}
    assert before["components"]["workers"] == {"status": "ok", "count": 1}
    queued = client.post("/jobs", json={"instances": [ROW]})
    assert queued.status_code == 202, queued.get_json()

    os.kill(process.pid, signal.SIGSTOP)
    try:
        predicted, predict_s = timed(lambda: client.post("/predict", json={"instances": [ROW]}))
        submitted, submit_s = timed(lambda: client.post("/jobs", json={"instances": [ROW]}))
        polled, poll_s = timed(lambda: client.get(f"/jobs/{queued.get_json()['job_id']}"))
        ready, ready_s = timed(lambda: client.get("/readyz"))
    finally:
        os.kill(process.pid, signal.SIGCONT)

    assert predicted.status_code == 200, predicted.get_json()
    assert predict_s < ANSWER_WITHIN_S
    for response, took in ((submitted, submit_s), (polled, poll_s)):
        body = check_problem(response, 503)
        assert "Redis" in body["detail"], body
        assert took < ANSWER_WITHIN_S, f"answered after {took:.2f} s"
    assert ready.status_code == 200
    assert ready_s < ANSWER_WITHIN_S
    components = ready.get_json()["components"]
    assert components["model"]["status"] == "ok"
    assert components["redis"]["status"] == "unreachable"
    assert "TimeoutError" in components["redis"]["detail"]
    assert components["workers"]["status"] == "unknown"

    # Thawed: the same app, with no restart, queues again and the worker finishes both jobs.
    again = client.post("/jobs", json={"instances": [ROW, ROW]})
    assert again.status_code == 202, again.get_json()
    assert wait_for_job(client, again.get_json()["job_id"])["status"] == "succeeded"
    assert wait_for_job(client, queued.get_json()["job_id"])["status"] == "succeeded"
    assert client.get("/readyz").get_json()["components"]["redis"] == {"status": "ok"}


def test_redis_gone_is_a_quick_503_and_readyz_says_so(
    api: Flask, redis_process: tuple[subprocess.Popen, str], check_problem
) -> None:
    """With the server stopped for good (connection refused), /jobs is a 503 at once and /readyz names it."""
    client: FlaskClient = api.test_client()
    stop_process(redis_process[0])

    submitted, took = timed(lambda: client.post("/jobs", json={"instances": [ROW]}))
    ready = client.get("/readyz")

    body = check_problem(submitted, 503)
    assert "Redis" in body["detail"]
    assert took < ANSWER_WITHIN_S
    assert ready.status_code == 200
    assert ready.get_json()["components"]["redis"]["status"] == "unreachable"
    assert ready.get_json()["components"]["workers"]["status"] == "unknown"
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200

"""Worker processes SIGKILLed at each step of a job, with real Redis and real Celery workers.

A killed batch step is finished by the sweeper of another worker (every row scored once); a
killed retrain is failed by it once its training lock lapses, and leaves the model store
whole; a task that kills its process each time it runs fails its job after a bounded number
of deliveries; two retrains submitted together train one after the other. Mid-chunk kills
are tests/integration/test_worker_crash.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from process_tree import children_of

from shared.jobs import KEY_PREFIX
from shared.settings import Settings
from worker.sweeper import WORKER_GONE

pytestmark = pytest.mark.integration

STALL_S = 10
LOCK_TTL_S = 2
CATCH_TIMEOUT_S = 60
POLL_S = 0.002
RECOVERY_TIMEOUT_S = 90
ID_COLUMN = "row_id"
# A fit of a few seconds: long enough to be killed in, and to outlive the lock's TTL several times.
SLOW_FIT = {"data": "slow.csv", "target": "label", "estimator": "random_forest", "params": {"n_estimators": 40}}
SLOW_ROWS = 6000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Stalled after 10 s, swept every second; a 2 s training lock; batch tasks cut off before a stall."""
    return settings.model_copy(
        update={
            "job_stall_after_s": STALL_S,
            "job_sweep_interval_s": 1,
            "batch_soft_time_limit_s": STALL_S - 2,
            "batch_time_limit_s": STALL_S - 1,
            "retrain_lock_ttl_s": LOCK_TTL_S,
        }
    )


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


@pytest.fixture
def slow_data(data_dir) -> None:
    """A table under the data directory whose forest takes seconds to fit."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{n}": rng.normal(size=SLOW_ROWS) for n in range(8)})
    frame["label"] = np.where(frame.x0 + frame.x1 * rng.normal(size=SLOW_ROWS) > 0, "a", "b")
    data_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data_dir / "slow.csv", index=False)


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, logs: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s\n{logs()}")
        time.sleep(POLL_S)
    return value


def submit_retrain(client, auth: dict, body: dict) -> str:
    response = client.post("/retrain", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def assert_store_whole(model_store, active: str) -> None:
    """Every listed version has all its files, and ACTIVE names one of them."""
    versions = model_store.versions()
    assert {version: model_store.integrity(version) for version in versions} == dict.fromkeys(versions, "ok")
    assert model_store.active_version() == active
    assert active in versions


# --- retrains --------------------------------------------------------------------------------


def test_retrain_killed_mid_fit_is_failed_and_frees_the_training_lock_within_its_ttl(
    client, settings, workers, model_store, trained_version, slow_data, auth, wait_for_job, redis_client
) -> None:
    """SIGKILL of the worker mid-fit: the lock lapses within its TTL, another worker's sweeper fails the job
    with the cause, the store holds only whole versions with ACTIVE unchanged, and the next retrain runs at once."""
    worker_a = workers.start(settings, concurrency=1)
    job_id = submit_retrain(client, auth, {**SLOW_FIT, "activate": "always"})
    wait_until(
        lambda: redis_client.hget(f"{KEY_PREFIX}{job_id}", "status") == "running", CATCH_TIMEOUT_S,
        "retrain started", workers.logs,
    )  # fmt: skip
    time.sleep(0.5)  # into the fit
    worker_a.kill()
    assert redis_client.hget(f"{KEY_PREFIX}{job_id}", "status") == "running"

    workers.start(settings, concurrency=1)
    failed = wait_for_job(client, job_id, timeout_s=LOCK_TTL_S + 30)

    assert failed["status"] == "failed", failed
    assert failed["error"] == WORKER_GONE
    assert_store_whole(model_store, trained_version)
    started = time.monotonic()
    after = wait_for_job(client, submit_retrain(client, auth, {"params": {"n_estimators": 5}, "activate": "always"}))
    assert after["status"] == "succeeded", after
    assert time.monotonic() - started < 60, "the next retrain waited for the dead one's lock"
    assert_store_whole(model_store, after["model_version"])


def test_two_retrains_at_once_train_one_after_the_other_and_both_succeed(
    client, settings, workers, model_store, trained_version, slow_data, auth, wait_for_job
) -> None:
    """Two retrains submitted together, two workers: the second trains only after the first finished (the lock,
    renewed through fits longer than its TTL, is never lost), both succeed, and ACTIVE names the last one."""
    workers.start(settings, concurrency=1)
    workers.start(settings, concurrency=1)
    job_ids = [submit_retrain(client, auth, {**SLOW_FIT, "activate": "always"}) for _ in range(2)]

    records = [wait_for_job(client, job_id, timeout_s=RECOVERY_TIMEOUT_S) for job_id in job_ids]

    assert [record["status"] for record in records] == ["succeeded", "succeeded"], [r.get("error") for r in records]
    first, second = sorted(records, key=lambda record: record["started_at"])
    assert first["finished_at"] <= second["started_at"], (first, second)
    assert "the training lock lapsed" not in workers.logs()
    assert_store_whole(model_store, second["model_version"])
    assert {first["model_version"], second["model_version"]} <= set(model_store.versions())


# --- a task that kills its process -------------------------------------------------------------


def test_a_chunk_that_kills_its_process_each_time_fails_the_job_after_the_delivery_limit(
    client, settings, workers, redis_client, penguin_sample, tmp_path, wait_for_job
) -> None:
    """The pool process scoring the job's one chunk is SIGKILLed each time it starts it (as the OOM killer
    would): the broker delivers it again, and after ``job_max_deliveries`` starts the job fails naming why."""
    settings = settings.model_copy(update={"job_chunk_rows": 50_000, "job_max_deliveries": 2})
    path = tmp_path / "rows.csv"
    penguin_sample(20_000, seed=5).to_csv(path, index=False)
    worker = workers.start(settings, concurrency=1)
    with open(path, "rb") as body:
        response = client.post("/jobs", input_stream=body, content_type="text/csv", content_length=path.stat().st_size)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    deliveries = f"{KEY_PREFIX}{job_id}:deliveries"

    for start in range(1, settings.job_max_deliveries + 1):
        wait_until(
            lambda start=start: int(redis_client.hget(deliveries, "chunk 0") or 0) >= start, CATCH_TIMEOUT_S,
            f"start {start} of chunk 0", workers.logs,
        )  # fmt: skip
        (pool_process,) = children_of(worker.process.pid)
        os.kill(pool_process, signal.SIGKILL)

    record = wait_for_job(client, job_id, timeout_s=RECOVERY_TIMEOUT_S)
    assert record["status"] == "failed", record
    assert record["error"].startswith("chunk 0 was started 2 times and its worker process died each time"), record
    assert "PREDICTQ_JOB_MAX_DELIVERIES=2" in record["error"]
    assert int(redis_client.hget(deliveries, "chunk 0")) == settings.job_max_deliveries + 1
    assert worker.process.poll() is None, "the worker itself lives on"


# --- batch steps ------------------------------------------------------------------------------

BATCH_ROWS = 200_000
BATCH_CHUNK_ROWS = 20_000
BATCH_CHUNKS = BATCH_ROWS // BATCH_CHUNK_ROWS


def in_split(redis_client, job_id: str) -> bool:
    status, chunks = redis_client.hmget(f"{KEY_PREFIX}{job_id}", "status", "chunks")
    return status == "running" and chunks is None


def in_finalize(redis_client, job_id: str) -> bool:
    key = f"{KEY_PREFIX}{job_id}"
    return redis_client.scard(f"{key}:chunks") == BATCH_CHUNKS and redis_client.hget(key, "status") == "running"


@pytest.mark.parametrize("step", [in_split, in_finalize], ids=["mid-split", "mid-finalize"])
def test_worker_killed_mid_step_leaves_a_job_another_worker_finishes_with_every_row_once(
    step, client, settings, workers, redis_client, penguin_sample, tmp_path, trained_version, wait_for_job,
    in_process_predictions, get_result, check_predictions,
) -> None:  # fmt: skip
    """SIGKILL of the worker while it splits the input, or joins the results: no result file is half-written,
    and a second worker's sweeper sends the step again; the result holds every row once, in order."""
    settings = settings.model_copy(update={"job_chunk_rows": BATCH_CHUNK_ROWS})
    rows = penguin_sample(BATCH_ROWS, seed=11)
    rows.insert(0, ID_COLUMN, [f"id-{n:06d}" for n in range(BATCH_ROWS)])
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    worker_a = workers.start(settings, concurrency=2)
    with open(path, "rb") as body:
        response = client.post(
            "/jobs", query_string={"id_column": ID_COLUMN}, input_stream=body, content_type="text/csv",
            content_length=path.stat().st_size,
        )  # fmt: skip
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]

    wait_until(lambda: step(redis_client, job_id), CATCH_TIMEOUT_S, f"job {job_id} {step.__name__}", workers.logs)
    worker_a.kill()
    assert redis_client.hget(f"{KEY_PREFIX}{job_id}", "status") == "running", "the kill came too late"
    result_json = settings.jobs_dir / job_id / "result.json"
    if result_json.exists():  # stored whole (renamed into place) or not at all
        assert len(json.loads(result_json.read_bytes())["ids"]) == BATCH_ROWS

    workers.start(settings, concurrency=2)
    record = wait_for_job(client, job_id, timeout_s=RECOVERY_TIMEOUT_S)

    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": BATCH_ROWS, "total": BATCH_ROWS}
    status, _, body = get_result(client, job_id)
    assert status == 200
    result = json.loads(body)
    assert result["ids"] == rows[ID_COLUMN].tolist()
    check_predictions(result, in_process_predictions(trained_version, rows.drop(columns=ID_COLUMN)))

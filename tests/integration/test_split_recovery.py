"""A split that died part way, delivered again to a real worker: the job finishes with every row once.

A worker SIGKILLed during a split leaves one of two states behind, and the broker hands the
split message to a worker again. Each state is made here exactly, in the test process, then
the split message is sent and a real worker takes it: no timing games, no sweeper (the stall
threshold is the default, far beyond each test). A kill at a random moment, and the sweeper
finishing the job, is tests/integration/test_worker_crash.py.
"""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest

from shared.batch import JobFiles, split_input
from shared.jobs import JobStore
from worker.celery_app import BATCH_QUEUE, SCORE_TASK, SPLIT_TASK

pytestmark = pytest.mark.integration

ROWS = 30
CHUNK_ROWS = 4  # the settings fixture's job_chunk_rows: eight chunks, the last one short
CHUNKS = 8
ID_COLUMN = "ref"


@pytest.fixture
def rows(penguin_sample) -> pd.DataFrame:
    frame = penguin_sample(ROWS, seed=11)
    frame.insert(0, ID_COLUMN, [f"{n:03d}" for n in range(ROWS)])
    return frame


@pytest.fixture
def job_id(client, redis_client, rows) -> str:
    """A JSON batch accepted while no worker runs, its split message taken off the queue (the worker
    that took it died)."""
    instances = json.loads(rows.to_json(orient="records"))
    response = client.post("/jobs", json={"instances": instances, "id_column": ID_COLUMN})
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]
    (message,) = redis_client.lrange(BATCH_QUEUE, 0, -1)
    assert task_of(message) == (SPLIT_TASK, [job_id])
    redis_client.delete(BATCH_QUEUE)
    return job_id


def task_of(raw_message: str) -> tuple[str, list]:
    message = json.loads(raw_message)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args


def check_scored_once(client, job_id, rows, trained_version, wait_for_job, in_process_predictions, get_result):
    record = wait_for_job(client, job_id)
    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": ROWS, "total": ROWS}
    status, _, body = get_result(client, job_id)
    assert status == 200
    result = json.loads(body)
    assert result["ids"] == rows[ID_COLUMN].tolist()  # every row once, in order
    assert result["predictions"] == in_process_predictions(trained_version, rows.drop(columns=ID_COLUMN)).labels


def test_split_delivered_again_after_recording_its_chunks_queues_the_unsent_ones(
    client,
    settings,
    job_id,
    rows,
    redis_client,
    workers,
    wait_for_job,
    trained_version,
    in_process_predictions,
    get_result,
) -> None:
    """The first split recorded the chunk count and queued chunks 0-2, then died: delivered again, the split
    queues every chunk not yet scored, and the job succeeds with each row once."""
    jobs = JobStore(redis_client, settings.job_retention_s)
    assert jobs.start(job_id)
    total, chunks = split_input(JobFiles(settings.jobs_dir, job_id), CHUNK_ROWS, ID_COLUMN)
    assert (total, chunks) == (ROWS, CHUNKS)
    jobs.update(job_id, total=total, chunks=chunks, chunk_rows=CHUNK_ROWS)
    celery = client.application.extensions["predictq"].celery
    for chunk in range(3):
        celery.send_task(SCORE_TASK, args=[job_id, chunk])
    celery.send_task(SPLIT_TASK, args=[job_id])

    worker = workers.start(settings)

    check_scored_once(client, job_id, rows, trained_version, wait_for_job, in_process_predictions, get_result)
    assert f"job {job_id} was split already; queued its" in worker.log()


def test_split_delivered_again_before_recording_its_chunks_splits_again(
    client,
    settings,
    job_id,
    rows,
    redis_client,
    workers,
    wait_for_job,
    trained_version,
    in_process_predictions,
    get_result,
) -> None:
    """The first split started and wrote some chunk files, then died before recording the count (so before
    queueing any chunk): delivered again, it splits anew, rewriting the same files, and the job succeeds with
    each row once."""
    jobs = JobStore(redis_client, settings.job_retention_s)
    assert jobs.start(job_id)
    files = JobFiles(settings.jobs_dir, job_id)
    split_input(files, CHUNK_ROWS, ID_COLUMN)
    for chunk in range(3, CHUNKS):
        files.chunk_input(chunk).unlink()  # never written by the first run
    assert "chunks" not in jobs.get(job_id)
    client.application.extensions["predictq"].celery.send_task(SPLIT_TASK, args=[job_id])

    worker = workers.start(settings)
    check_scored_once(client, job_id, rows, trained_version, wait_for_job, in_process_predictions, get_result)

    assert f"job {job_id} was split already" not in worker.log()
    assert sorted(int(c) for c in redis_client.smembers(f"predictq:job:{job_id}:chunks")) == list(range(CHUNKS))
    assert redis_client.hget(f"predictq:job:{job_id}", "chunks") == str(CHUNKS)

"""Batch jobs whose queue messages were lost are finished by the workers' sweeper.

The Redis transport can lose a message for good (a worker killed between popping it and
recording it as unacknowledged, celery/kombu#305). Here the loss is made exact: messages
are deleted from the broker's ``batch`` list before any worker runs, then a worker with a
short stall threshold starts and must find the job and send the lost steps again.
"""

from __future__ import annotations

import base64
import json
import time

import pandas as pd
import pytest

from shared.batch import JobFiles, split_input
from shared.jobs import JobStore
from shared.settings import Settings
from worker.celery_app import BATCH_QUEUE, SCORE_TASK, SPLIT_TASK
from worker.sweeper import SWEEP_LOCK

pytestmark = pytest.mark.integration

ROWS = 30
CHUNK_ROWS = 4  # eight chunks, the last one short
CHUNKS = 8
ID_COLUMN = "ref"
STALL_S = 4
RECOVERY_TIMEOUT_S = 60
POLL_S = 0.05


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Stalled after 4 s, swept every second; batch tasks are cut off before they could look stalled."""
    return settings.model_copy(
        update={
            "job_chunk_rows": CHUNK_ROWS,
            "job_stall_after_s": STALL_S,
            "job_sweep_interval_s": 1,
            "batch_soft_time_limit_s": STALL_S - 2,
            "batch_time_limit_s": STALL_S - 1,
        }
    )


def task_of(raw_message: str) -> tuple[str, list]:
    """(task name, args) of a message as the Redis transport stores it."""
    message = json.loads(raw_message)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args


def lose_messages(redis_client, keep) -> list[tuple[str, list]]:
    """Delete the queued batch messages for which ``keep(task, args)`` is false; return what was lost
    (newest first: the transport pushes on the left and pops on the right)."""
    lost = []
    for raw in redis_client.lrange(BATCH_QUEUE, 0, -1):
        task = task_of(raw)
        if not keep(*task):
            assert redis_client.lrem(BATCH_QUEUE, 1, raw) == 1
            lost.append(task)
    return lost


@pytest.fixture
def rows(penguin_sample) -> pd.DataFrame:
    frame = penguin_sample(ROWS, seed=3)
    frame.insert(0, ID_COLUMN, [f"{n:03d}" for n in range(ROWS)])
    return frame


@pytest.fixture
def job_id(client, rows) -> str:
    """A JSON batch accepted and queued while no worker runs."""
    response = client.post(
        "/jobs", json={"instances": json.loads(rows.to_json(orient="records")), "id_column": ID_COLUMN}
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def wait_for_done(client, job_id: str, rows: int, worker) -> None:
    """Wait (bounded) until ``rows`` rows of the job are scored."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while (record := client.get(f"/jobs/{job_id}").get_json())["progress"]["done"] < rows:
        if time.monotonic() > deadline:
            pytest.fail(f"{rows} rows not scored within {RECOVERY_TIMEOUT_S} s:\n{record}\n{worker.log()}")
        time.sleep(POLL_S)
    assert record["progress"]["done"] == rows, record


def assert_scored_once(client, job_id, rows, record, trained_version, in_process_predictions, get_result, check):
    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": ROWS, "total": ROWS}
    status, _, body = get_result(client, job_id)
    assert status == 200
    result = json.loads(body)
    assert result["ids"] == rows[ID_COLUMN].tolist()  # every row once, in order
    check(result, in_process_predictions(trained_version, rows.drop(columns=ID_COLUMN)))


def test_job_whose_split_message_was_lost_is_split_and_finished(
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
    check_predictions,
) -> None:
    """A queued job whose only message is gone gets its split re-sent by a worker's sweeper, and succeeds
    with every row scored once, equal to in-process predictions."""
    assert lose_messages(redis_client, keep=lambda task, args: False) == [(SPLIT_TASK, [job_id])]
    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "queued"

    worker = workers.start(settings)
    record = wait_for_job(client, job_id, timeout_s=RECOVERY_TIMEOUT_S)

    assert_scored_once(
        client, job_id, rows, record, trained_version, in_process_predictions, get_result, check_predictions
    )
    assert f"job {job_id} stalled before it was split; split re-sent" in worker.log()


def test_job_whose_chunk_messages_were_lost_gets_exactly_those_chunks_again(
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
    check_predictions,
) -> None:
    """After the split queued every chunk, the odd chunks' messages are lost: the worker scores the others,
    the sweeper re-sends the odd ones once the job stops moving, and the job succeeds."""
    # The split, as the split task does it, here in the test process.
    assert lose_messages(redis_client, keep=lambda task, args: False) == [(SPLIT_TASK, [job_id])]
    jobs = JobStore(redis_client, settings.job_retention_s)
    assert jobs.start(job_id)
    total, chunks = split_input(JobFiles(settings.jobs_dir, job_id), settings.job_chunk_rows, ID_COLUMN)
    assert (total, chunks) == (ROWS, CHUNKS)
    jobs.update(job_id, total=total, chunks=chunks, chunk_rows=settings.job_chunk_rows)
    celery = client.application.extensions["predictq"].celery
    for chunk in range(chunks):
        celery.send_task(SCORE_TASK, args=[job_id, chunk])
    lost = lose_messages(redis_client, keep=lambda task, args: args[1] % 2 == 0)
    odd = list(range(1, CHUNKS, 2))
    assert sorted(lost) == [(SCORE_TASK, [job_id, chunk]) for chunk in odd]

    # Holding the sweep lock, as another worker would while sweeping, keeps the new worker from
    # sweeping before it has scored the chunks still queued, however slowly it starts.
    redis_client.set(SWEEP_LOCK, "test", ex=RECOVERY_TIMEOUT_S)
    worker = workers.start(settings)
    even_rows = sum(min(CHUNK_ROWS, ROWS - chunk * CHUNK_ROWS) for chunk in range(0, CHUNKS, 2))
    wait_for_done(client, job_id, even_rows, worker)
    redis_client.delete(SWEEP_LOCK)
    record = wait_for_job(client, job_id, timeout_s=RECOVERY_TIMEOUT_S)

    assert_scored_once(
        client, job_id, rows, record, trained_version, in_process_predictions, get_result, check_predictions
    )
    assert f"job {job_id} stalled with {len(odd)} chunks unscored; score tasks re-sent for chunks {odd}" in worker.log()

"""A worker killed mid-job: late acknowledgement plus the broker's visibility timeout finish the job elsewhere.

What the kombu Redis transport can and cannot redeliver shapes this test. A message is
popped from the queue list (BRPOP) and only then written to the ``unacked`` hash by the
worker; one popped but not yet recorded when the worker dies is gone (celery/kombu#305,
celery/celery#4354), and its chunk is never scored. So the test freezes the worker with
SIGSTOP, checks from Redis that every chunk is accounted for (scored, queued or unacked),
and only then kills it; otherwise it lets the worker run on a little and tries again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time

import pandas as pd
import pytest

from shared.jobs import FINISHED, KEY_PREFIX
from shared.settings import Settings

pytestmark = pytest.mark.integration

ROWS = 16_000
CHUNK_ROWS = 200  # 80 chunks of a few tens of milliseconds each: a wide window to kill in
CHUNKS = ROWS // CHUNK_ROWS
ID_COLUMN = "row_id"
VISIBILITY_TIMEOUT_S = 6
BATCH_QUEUE = "batch"
# Where the kombu Redis transport keeps delivered, unacknowledged messages, and when each was delivered.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
SETTLE_S = 0.2  # for commands the frozen worker already sent to be carried out by Redis


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Unacked messages come back after 6 s; hard limits stay below that, as the settings require."""
    return settings.model_copy(
        update={
            "job_chunk_rows": CHUNK_ROWS,
            "broker_visibility_timeout_s": VISIBILITY_TIMEOUT_S,
            "batch_soft_time_limit_s": VISIBILITY_TIMEOUT_S - 2,
            "batch_time_limit_s": VISIBILITY_TIMEOUT_S - 1,
        }
    )


def task_of(raw_message: str) -> tuple[str, str, list]:
    """(task id, task name, args) of a message as the Redis transport stores it."""
    message = json.loads(raw_message)
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["id"], message["headers"]["task"], args


def unacked_tasks(redis_client) -> list[tuple[str, str, list]]:
    return [task_of(json.dumps(json.loads(raw)[0])) for raw in redis_client.hvals(UNACKED_KEY)]


def traced_chunks(redis_client, job_id: str) -> set[int]:
    """Chunks Redis still knows about: scored, waiting in the queue, or delivered and unacked."""
    scored = {int(chunk) for chunk in redis_client.smembers(f"{KEY_PREFIX}{job_id}:chunks")}
    queued = [task_of(raw) for raw in redis_client.lrange(BATCH_QUEUE, 0, -1)]
    pending = [args[1] for _, name, args in queued + unacked_tasks(redis_client) if name.endswith("score_chunk")]
    return scored | set(pending)


def test_chunks_of_a_killed_worker_are_redelivered_and_every_row_scored_once(
    client,
    settings,
    workers,
    redis_client,
    tmp_path,
    penguin_sample,
    trained_version,
    wait_for_job,
    in_process_predictions,
    get_result,
    check_predictions,
) -> None:
    """After SIGKILL of a worker and its pool mid-job, a second worker gets the unacked chunks and the
    result has every input row exactly once, in order, equal to in-process predictions."""
    rows = penguin_sample(ROWS, seed=7)
    rows.insert(0, ID_COLUMN, [f"id-{n:05d}" for n in range(ROWS)])
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    worker_a = workers.start(settings)
    with open(path, "rb") as body:
        response = client.post(
            "/jobs",
            query_string={"id_column": ID_COLUMN},
            input_stream=body,
            content_type="text/csv",
            content_length=path.stat().st_size,
        )
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]

    # Freeze worker A once every chunk is queued (the split task is done) and some, not all, are
    # scored; kill it if no message is in transit, else let it run on and try again.
    split_done = re.compile(r"Task predictq\.batch\.split\[[0-9a-f-]+\] succeeded")
    deadline = time.monotonic() + 60
    while True:
        record = client.get(f"/jobs/{job_id}").get_json()
        done, total = record["progress"]["done"], record["progress"]["total"]
        if record["status"] in FINISHED or time.monotonic() > deadline:
            pytest.fail(f"never caught the job mid-way:\n{json.dumps(record, indent=2)}\n{workers.logs()}")
        if total and 0 < done < total and redis_client.hlen(UNACKED_KEY) and split_done.search(worker_a.log()):
            os.killpg(worker_a.process.pid, signal.SIGSTOP)
            time.sleep(SETTLE_S)
            if traced_chunks(redis_client, job_id) == set(range(CHUNKS)) and redis_client.hlen(UNACKED_KEY):
                break
            os.killpg(worker_a.process.pid, signal.SIGCONT)
        time.sleep(0.005)
    worker_a.kill()

    orphaned = {task_id for task_id, _, _ in unacked_tasks(redis_client)}
    assert orphaned, "the kill left nothing unacknowledged, so nothing is redelivered"
    stalled = client.get(f"/jobs/{job_id}").get_json()
    assert stalled["status"] == "running"
    assert stalled["progress"]["done"] < ROWS

    # The transport restores messages unacked for longer than the visibility timeout when a worker
    # starts polling, then only every unacked_restore_interval x throttle (100 s by default): start
    # worker B once the orphaned messages are old enough for its first sweep to return them.
    delivered_at = max(score for _, score in redis_client.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True))
    time.sleep(max(0.0, delivered_at + VISIBILITY_TIMEOUT_S + 1 - time.time()))
    worker_b = workers.start(settings)
    record = wait_for_job(client, job_id, timeout_s=90)

    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": ROWS, "total": ROWS}
    # Worker B ran the very messages worker A held when it died.
    finished_by_b = set(re.findall(r"Task predictq\.batch\.\w+\[([0-9a-f-]+)\] succeeded", worker_b.log()))
    assert orphaned <= finished_by_b, (orphaned - finished_by_b, worker_b.log())
    status, _, body = get_result(client, job_id)
    assert status == 200
    result = json.loads(body)
    assert len(result["ids"]) == ROWS
    assert result["ids"] == rows[ID_COLUMN].tolist()
    assert pd.Series(result["ids"]).is_unique
    check_predictions(result, in_process_predictions(trained_version, rows.drop(columns=ID_COLUMN)))

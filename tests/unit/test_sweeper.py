"""The sweeper's decisions on fakeredis job records, read back from Celery's memory broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
from celery import Celery
from pydantic import ValidationError

from shared.batch import JobFiles, write_json_input
from shared.jobs import (
    ACTIVE_KEY,
    FINALIZE,
    RETRAIN_LOCK,
    RUNNING,
    SCORE,
    SPLIT,
    JobStore,
    Recovery,
    is_stalled,
    lost_step,
    retrain_lock_token,
)
from shared.serving import ModelCache
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from worker.celery_app import BATCH_QUEUE, FINALIZE_TASK, SCORE_TASK, SPLIT_TASK, TRAINING_QUEUE, make_celery
from worker.context import WorkerContext
from worker.sweeper import SWEEP_LOCK, WORKER_GONE, Sweeper, remove_expired_job_files, sweep

STALL_S = 900
RETENTION_S = 3600
CHUNKS = 5


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, broker_url="memory://", redis_url="redis://unused", job_stall_after_s=STALL_S)


@pytest.fixture
def celery(settings: Settings) -> Iterator[Celery]:
    app = make_celery(settings)
    drain(app, BATCH_QUEUE)  # the memory broker's queues are process-global: start empty
    drain(app, TRAINING_QUEUE)
    yield app
    app.close()


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def jobs(redis_client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(redis_client, RETENTION_S)


def drain(app: Celery, queue: str) -> list[tuple[str, list]]:
    """Take every message off a queue of the memory broker: (task name, args)."""
    messages = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            messages.append((message.headers["task"], message.decode()[0]))
    return messages


def later(seconds: float = STALL_S + 1) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def running_job(jobs: JobStore, job_id: str, done: list[int]) -> None:
    """A batch job split into CHUNKS chunks of which ``done`` are scored."""
    jobs.create(job_id, "batch", model_version="v1")
    assert jobs.start(job_id)
    jobs.update(job_id, total=CHUNKS * 10, chunks=CHUNKS, chunk_rows=10)
    for chunk in done:
        jobs.record_chunk(job_id, chunk, 10)


# --- deciding ------------------------------------------------------------------------------


def test_stall_is_judged_from_the_last_progress(jobs: JobStore) -> None:
    """A job is stalled once progress_at is older than the threshold; a finished job never is."""
    jobs.create("j1", "batch")
    record = jobs.get("j1")
    assert not is_stalled(record, datetime.now(UTC), STALL_S)
    assert is_stalled(record, later(), STALL_S)
    jobs.succeed("j1")
    assert not is_stalled(jobs.get("j1"), later(), STALL_S)


@pytest.mark.parametrize(
    ("record", "missing", "expected"),
    [
        ({"kind": "batch", "status": "queued"}, [], Recovery(SPLIT)),
        ({"kind": "batch", "status": "running"}, [], Recovery(SPLIT)),
        ({"kind": "batch", "status": "running", "chunks": 4}, [1, 3], Recovery(SCORE, (1, 3))),
        ({"kind": "batch", "status": "running", "chunks": 4}, [], Recovery(FINALIZE)),
        ({"kind": "retrain", "status": "running"}, [], None),
        ({"kind": "batch", "status": "succeeded", "chunks": 4}, [], None),
    ],
    ids=["queued", "running-unsplit", "chunks-missing", "all-scored", "retrain", "finished"],
)
def test_lost_step_follows_how_far_the_job_got(record: dict, missing: list[int], expected: Recovery | None) -> None:
    """Queued or unsplit: split; split: the missing chunks, or finalize when none is missing."""
    assert lost_step(record, missing) == expected


# --- sweeping ------------------------------------------------------------------------------


def test_stalled_queued_job_gets_its_split_again(celery: Celery, jobs: JobStore) -> None:
    """A queued job whose split message was lost has one split sent again, and only once per stall period."""
    jobs.create("j1", "batch")
    now = later()

    assert sweep(celery, jobs, STALL_S, now) == {"j1": Recovery(SPLIT)}
    assert drain(celery, BATCH_QUEUE) == [(SPLIT_TASK, ["j1"])]
    assert jobs.get("j1")["progress_at"] == now.isoformat()
    assert sweep(celery, jobs, STALL_S, now) == {}
    assert drain(celery, BATCH_QUEUE) == []


def test_stalled_running_job_gets_exactly_its_missing_chunks(celery: Celery, jobs: JobStore) -> None:
    """A split job whose chunk messages were lost has the score tasks of the unscored chunks sent again."""
    running_job(jobs, "j1", done=[0, 2])

    assert sweep(celery, jobs, STALL_S, later()) == {"j1": Recovery(SCORE, (1, 3, 4))}
    assert drain(celery, BATCH_QUEUE) == [(SCORE_TASK, ["j1", 1]), (SCORE_TASK, ["j1", 3]), (SCORE_TASK, ["j1", 4])]
    assert drain(celery, TRAINING_QUEUE) == []


def test_fresh_jobs_are_left_alone(celery: Celery, jobs: JobStore) -> None:
    """Jobs that moved within the threshold (queued, started, a chunk just scored) get nothing."""
    jobs.create("queued", "batch")
    running_job(jobs, "running", done=[0])

    assert sweep(celery, jobs, STALL_S) == {}
    assert drain(celery, BATCH_QUEUE) == []


def test_a_scored_chunk_restarts_the_stall_clock(celery: Celery, jobs: JobStore) -> None:
    """Progress is measured from the latest chunk, not from the start of the job."""
    running_job(jobs, "j1", done=[0])
    jobs.touch("j1", datetime.now(UTC) - timedelta(seconds=STALL_S + 1))
    assert sweep(celery, jobs, STALL_S) == {"j1": Recovery(SCORE, (1, 2, 3, 4))}
    drain(celery, BATCH_QUEUE)

    jobs.touch("j1", datetime.now(UTC) - timedelta(seconds=STALL_S + 1))
    jobs.record_chunk("j1", 1, 10)
    assert sweep(celery, jobs, STALL_S) == {}
    assert drain(celery, BATCH_QUEUE) == []


@pytest.mark.parametrize("finish", ["succeed", "fail", "cancel", "expire"])
def test_finished_or_expired_jobs_leave_the_active_set_and_are_ignored(
    celery: Celery, jobs: JobStore, redis_client: fakeredis.FakeRedis, finish: str
) -> None:
    """An id left in the active set for a finished or expired job is dropped, and nothing is sent."""
    running_job(jobs, "j1", done=[0])
    if finish == "succeed":
        assert jobs.succeed("j1")
    elif finish == "fail":
        assert jobs.fail("j1", "boom")
    elif finish == "cancel":
        jobs.cancel("j1")
    else:
        redis_client.delete("predictq:job:j1")
    redis_client.sadd(ACTIVE_KEY, "j1")  # as if left behind

    assert sweep(celery, jobs, STALL_S, later()) == {}
    assert drain(celery, BATCH_QUEUE) == []
    assert jobs.active_job_ids() == []
    assert not redis_client.exists("predictq:job:j1") or jobs.get("j1")["status"] != RUNNING


@pytest.mark.parametrize("claimed", [True, False], ids=["claim-held", "claim-never-taken"])
def test_lost_finalize_is_sent_again_once(celery: Celery, jobs: JobStore, claimed: bool) -> None:
    """Every chunk scored, job still running: the finalize claim is released and one finalize is sent."""
    running_job(jobs, "j1", done=list(range(CHUNKS)))
    if claimed:
        assert jobs.claim("j1", FINALIZE)  # the scorer of the last chunk claimed it; its message was lost
    now = later()

    assert sweep(celery, jobs, STALL_S, now) == {"j1": Recovery(FINALIZE)}
    assert drain(celery, BATCH_QUEUE) == [(FINALIZE_TASK, ["j1"])]
    assert not jobs.claim("j1", FINALIZE), "the re-sent finalize holds the claim"
    assert sweep(celery, jobs, STALL_S, now) == {}
    assert drain(celery, BATCH_QUEUE) == []


def test_stalled_retrain_is_logged_not_resent(celery: Celery, jobs: JobStore, caplog: pytest.LogCaptureFixture) -> None:
    """A retrain job is never re-sent (training lock); a stall is logged with its job id, once per period."""
    jobs.create("r1", "retrain", options={"activate": "never"})
    now = later()

    with caplog.at_level(logging.WARNING, logger="worker.sweeper"):
        assert sweep(celery, jobs, STALL_S, now) == {}
        assert sweep(celery, jobs, STALL_S, now) == {}
    assert drain(celery, TRAINING_QUEUE) == []
    (warning,) = [r for r in caplog.records if r.name == "worker.sweeper"]
    assert warning.job_id == "r1"
    assert "not re-sent" in warning.getMessage()


def test_each_requeue_is_logged_with_its_job_id(
    celery: Celery, jobs: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning per re-sent job, tagged with the job id and naming what was sent."""
    jobs.create("j1", "batch")
    running_job(jobs, "j2", done=[0, 1, 2])

    with caplog.at_level(logging.WARNING, logger="worker.sweeper"):
        sweep(celery, jobs, STALL_S, later())
    drain(celery, BATCH_QUEUE)
    lines = {r.job_id: r.getMessage() for r in caplog.records if r.name == "worker.sweeper"}
    assert set(lines) == {"j1", "j2"}
    assert "split re-sent" in lines["j1"]
    assert "chunks [3, 4]" in lines["j2"]


def test_one_worker_sweeps_per_interval(
    celery: Celery, settings: Settings, jobs: JobStore, redis_client: fakeredis.FakeRedis
) -> None:
    """Two workers' sweepers share the lock: the first sweeps and holds it for one interval, the second waits."""
    first, second = Sweeper(celery, settings, redis_client), Sweeper(celery, settings, redis_client)

    assert first.sweep_once()
    assert not second.sweep_once()
    assert 0 < redis_client.ttl(SWEEP_LOCK) <= settings.job_sweep_interval_s
    redis_client.delete(SWEEP_LOCK)  # the interval is over
    assert second.sweep_once()


# --- tasks receiving a message sent again ----------------------------------------------------


@pytest.fixture
def worker_app(celery: Celery, settings: Settings, redis_client: fakeredis.FakeRedis, jobs: JobStore) -> Celery:
    """The Celery app with a worker context on fakeredis, so its tasks run in this process."""
    celery.loader.import_default_modules()  # worker.tasks, as a worker imports it
    store = ModelStore(LocalStorage(settings.data_dir))
    celery.predictq_context = WorkerContext(settings, redis_client, jobs, store, ModelCache(store))
    return celery


def test_split_sent_again_after_the_split_is_skipped(worker_app: Celery, jobs: JobStore) -> None:
    """A second split of a job that has its chunk count neither cuts the input again nor queues chunks."""
    running_job(jobs, "j1", done=[0])
    before = jobs.get("j1")

    worker_app.tasks[SPLIT_TASK]("j1")

    assert jobs.get("j1") == before
    assert drain(worker_app, BATCH_QUEUE) == []


def test_chunk_sent_again_after_it_was_scored_is_skipped(worker_app: Celery, jobs: JobStore) -> None:
    """A copy of a scored chunk's message does no work (its files are not even read) and fails nothing."""
    running_job(jobs, "j1", done=[0])
    before = jobs.get("j1")

    worker_app.tasks[SCORE_TASK]("j1", 0)

    assert jobs.get("j1") == before
    assert drain(worker_app, BATCH_QUEUE) == []


# --- settings ------------------------------------------------------------------------------


def test_stall_threshold_must_outlast_the_batch_hard_limit(tmp_path: Path) -> None:
    """A threshold at or below the hard time limit would re-send chunks that are still being scored."""
    assert Settings(data_dir=tmp_path, batch_time_limit_s=660, job_stall_after_s=661).job_stall_after_s == 661
    with pytest.raises(ValidationError, match="PREDICTQ_JOB_STALL_AFTER_S"):
        Settings(data_dir=tmp_path, batch_time_limit_s=660, job_stall_after_s=660)


EXPIRED, ALIVE = "e" * 32, "a" * 32


def test_files_of_expired_jobs_are_removed_and_live_jobs_keep_theirs(
    jobs: JobStore, redis_client: fakeredis.FakeRedis, settings: Settings
) -> None:
    """Once a job's record has expired, a sweep deletes its files; a job still on record keeps them."""
    storage = LocalStorage(settings.data_dir)
    for job_id in (EXPIRED, ALIVE):
        jobs.create(job_id, "batch")
        files = JobFiles(settings.jobs_dir, job_id, storage)
        write_json_input(files, [{"x": 1}])
        assert files.exists(files.input_json)
    redis_client.delete(f"predictq:job:{EXPIRED}")  # what the retention TTL does
    removed = remove_expired_job_files(jobs, storage, settings)
    assert removed == []  # not yet due: retention has not passed

    future = time.time() + settings.job_retention_s + 1
    assert jobs.expired_job_ids(now=future) == [EXPIRED]
    assert remove_expired_job_files(jobs, storage, settings, now=future) == [EXPIRED]
    assert not (settings.jobs_dir / EXPIRED).exists()
    assert JobFiles(settings.jobs_dir, ALIVE, storage).exists(settings.jobs_dir / ALIVE / "input.json")
    assert jobs.expired_job_ids(now=future) == []


def test_an_id_that_is_not_a_job_id_never_becomes_a_path(
    jobs: JobStore, redis_client: fakeredis.FakeRedis, settings: Settings
) -> None:
    """ "../models" written into the expiry index is dropped from it; the models directory stays."""
    storage = LocalStorage(settings.data_dir)
    storage.write_bytes("models/v/manifest.json", b"{}")
    redis_client.zadd("predictq:jobs:expiry", {"../models": 0, "../../etc": 0})

    assert remove_expired_job_files(jobs, storage, settings, now=time.time()) == []

    assert storage.exists("models/v/manifest.json")
    assert jobs.expired_job_ids(now=time.time() + settings.job_retention_s + 1) == []


def test_running_retrain_whose_training_lock_lapsed_is_failed(celery: Celery, jobs: JobStore) -> None:
    """A running retrain that holds no training lock lost its worker (the lock lapsed): failed at the next
    sweep, stalled or not, with a reason that says to submit it again."""
    jobs.create("r1", "retrain", options={"activate": "always"})
    assert jobs.start("r1")

    assert sweep(celery, jobs, STALL_S) == {}

    record = jobs.get("r1")
    assert record["status"] == "failed"
    assert record["error"] == WORKER_GONE
    assert "submit the retrain again" in record["error"]
    assert drain(celery, TRAINING_QUEUE) == []


def test_running_retrain_holding_the_lock_and_queued_retrains_are_left_alone(
    celery: Celery, jobs: JobStore, redis_client: fakeredis.FakeRedis
) -> None:
    """The retrain the lock names keeps running; one queued behind it (waiting for the lock) stays queued;
    a running retrain the lock does not name (another job holds it) is failed."""
    for job_id in ("r1", "r2", "r3"):
        jobs.create(job_id, "retrain", options={"activate": "always"})
    assert jobs.start("r1")
    assert jobs.start("r3")
    redis_client.set(RETRAIN_LOCK, retrain_lock_token("r1"), px=60_000)

    sweep(celery, jobs, STALL_S)

    assert [jobs.get(job_id)["status"] for job_id in ("r1", "r2", "r3")] == ["running", "queued", "failed"]

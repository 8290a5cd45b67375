"""The batch tasks' bodies on fakeredis and Celery's memory broker: what a split sent again does,
messages naming no job, and inputs whose columns the result would overwrite."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pandas as pd
import pytest
from celery import Celery

from shared.batch import JobFiles, split_input, write_json_input
from shared.jobs import FINALIZE, JobStore, new_job_id
from shared.lifecycle import train_version
from shared.serving import ModelCache
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.training import TrainingOptions
from worker.celery_app import BATCH_QUEUE, FINALIZE_TASK, SCORE_TASK, SPLIT_TASK, TRAINING_QUEUE, make_celery
from worker.context import WorkerContext

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
CHUNK_ROWS = 4
ROWS = 10  # three chunks: 4, 4, 2
CHUNKS = 3
RETENTION_S = 3600


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small forest on species, trained once; its data dir and version."""
    root = tmp_path_factory.mktemp("task-models")
    options = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 10})
    return root, train_version(ModelStore(LocalStorage(root)), PENGUINS_CSV, options)["version"]


@pytest.fixture
def settings(tmp_path: Path, models_dir: tuple[Path, str]) -> Settings:
    shutil.copytree(models_dir[0] / "models", tmp_path / "models")
    return Settings(data_dir=tmp_path, broker_url="memory://", redis_url="redis://unused", job_chunk_rows=CHUNK_ROWS)


@pytest.fixture
def version(models_dir: tuple[Path, str]) -> str:
    return models_dir[1]


def drain(app: Celery, queue: str) -> list[tuple[str, list]]:
    """Take every message off a queue of the memory broker: (task name, args)."""
    messages = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            messages.append((message.headers["task"], message.decode()[0]))
    return messages


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def jobs(redis_client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(redis_client, RETENTION_S)


@pytest.fixture
def app(settings: Settings, redis_client: fakeredis.FakeRedis, jobs: JobStore) -> Iterator[Celery]:
    """The Celery app with a worker context on fakeredis, so its tasks run in this process."""
    app = make_celery(settings)
    drain(app, BATCH_QUEUE)  # the memory broker's queues are process-global: start empty
    drain(app, TRAINING_QUEUE)
    app.loader.import_default_modules()  # worker.tasks, as a worker imports it
    store = ModelStore(LocalStorage(settings.data_dir))
    app.predictq_context = WorkerContext(settings, redis_client, jobs, store, ModelCache(store))
    yield app
    app.close()


def instances(**extra: object) -> list[dict]:
    rows = pd.read_csv(PENGUINS_CSV).drop(columns="species").head(ROWS)
    return [{**row, **extra} for row in json.loads(rows.to_json(orient="records"))]


@pytest.fixture
def job_id(jobs: JobStore, settings: Settings, version: str) -> str:
    """A queued JSON batch of ten rows, its input stored."""
    job_id = new_job_id()
    write_json_input(JobFiles(settings.jobs_dir, job_id), instances())
    jobs.create(job_id, "batch", model_version=version, input="json")
    return job_id


def record_split(jobs: JobStore, settings: Settings, job_id: str) -> None:
    """What a split does before queueing its chunks: chunk files written, count recorded."""
    assert jobs.start(job_id)
    total, chunks = split_input(JobFiles(settings.jobs_dir, job_id), CHUNK_ROWS)
    jobs.update(job_id, total=total, chunks=chunks, chunk_rows=CHUNK_ROWS)


def test_split_queues_one_score_task_per_chunk(app: Celery, jobs: JobStore, job_id: str) -> None:
    """A first split records the counts and queues every chunk, in order."""
    app.tasks[SPLIT_TASK](job_id)

    record = jobs.get(job_id)
    assert (record["status"], record["total"], record["chunks"]) == ("running", ROWS, CHUNKS)
    assert drain(app, BATCH_QUEUE) == [(SCORE_TASK, [job_id, chunk]) for chunk in range(CHUNKS)]


def test_split_sent_again_queues_the_chunks_not_yet_scored(
    app: Celery, jobs: JobStore, settings: Settings, job_id: str
) -> None:
    """A split that died after recording the chunk count, run again, queues every unscored chunk
    (the ones it may never have sent) and cuts nothing anew."""
    record_split(jobs, settings, job_id)
    jobs.record_chunk(job_id, 1, CHUNK_ROWS)
    files = JobFiles(settings.jobs_dir, job_id)
    chunk_bytes = files.chunk_input(0).read_bytes()
    before = jobs.get(job_id)

    app.tasks[SPLIT_TASK](job_id)

    assert drain(app, BATCH_QUEUE) == [(SCORE_TASK, [job_id, 0]), (SCORE_TASK, [job_id, 2])]
    assert jobs.get(job_id) == before
    assert files.chunk_input(0).read_bytes() == chunk_bytes


def test_split_sent_again_with_every_chunk_scored_queues_an_unclaimed_finalize(
    app: Celery, jobs: JobStore, settings: Settings, job_id: str
) -> None:
    """Every chunk scored but finalize never claimed (the last scorer died): the split queues it, once."""
    record_split(jobs, settings, job_id)
    for chunk in range(CHUNKS):
        jobs.record_chunk(job_id, chunk, 1)

    app.tasks[SPLIT_TASK](job_id)
    app.tasks[SPLIT_TASK](job_id)

    assert drain(app, BATCH_QUEUE) == [(FINALIZE_TASK, [job_id])]


def test_split_sent_again_leaves_a_claimed_finalize_alone(
    app: Celery, jobs: JobStore, settings: Settings, job_id: str
) -> None:
    """When the last scorer claimed finalize, a split run again queues nothing."""
    record_split(jobs, settings, job_id)
    for chunk in range(CHUNKS):
        jobs.record_chunk(job_id, chunk, 1)
    assert jobs.claim(job_id, FINALIZE)

    app.tasks[SPLIT_TASK](job_id)

    assert drain(app, BATCH_QUEUE) == []


def test_split_that_died_before_recording_chunks_splits_again(
    app: Celery, jobs: JobStore, settings: Settings, job_id: str
) -> None:
    """Running, some chunk files written, no count recorded: the split runs in full, rewrites the same
    chunk files and queues every chunk."""
    assert jobs.start(job_id)
    files = JobFiles(settings.jobs_dir, job_id)
    split_input(files, CHUNK_ROWS)
    first = [files.chunk_input(chunk).read_bytes() for chunk in range(CHUNKS)]
    files.chunk_input(2).unlink()  # the run died before writing the last chunk

    app.tasks[SPLIT_TASK](job_id)

    assert jobs.get(job_id)["chunks"] == CHUNKS
    assert [files.chunk_input(chunk).read_bytes() for chunk in range(CHUNKS)] == first
    assert drain(app, BATCH_QUEUE) == [(SCORE_TASK, [job_id, chunk]) for chunk in range(CHUNKS)]


@pytest.mark.parametrize("task", [SPLIT_TASK, SCORE_TASK, FINALIZE_TASK])
def test_a_message_naming_no_job_id_is_dropped_unread(
    app: Celery, redis_client: fakeredis.FakeRedis, settings: Settings, task: str
) -> None:
    """A message for "../models" (say, forged in Redis) reads no record, touches no file and queues nothing."""
    bad_id = "../models"
    redis_client.hset(f"predictq:job:{bad_id}", mapping={"status": "running", "kind": "batch", "chunks": 1})
    models = sorted(p.name for p in (settings.data_dir / "models").iterdir())
    args = [bad_id, 0] if task == SCORE_TASK else [bad_id]

    app.tasks[task](*args)

    assert sorted(p.name for p in (settings.data_dir / "models").iterdir()) == models
    assert redis_client.hgetall(f"predictq:job:{bad_id}")[b"status"] == b"running"
    assert drain(app, BATCH_QUEUE) == []


def test_a_csv_with_a_probability_column_fails_its_job_at_split(
    app: Celery, jobs: JobStore, settings: Settings, version: str
) -> None:
    """An input column the result adds itself (probability_<class>) fails the job before any chunk is
    queued, with an error naming the column."""
    job_id = new_job_id()
    files = JobFiles(settings.jobs_dir, job_id).create()
    pd.DataFrame(instances(probability_Gentoo=0.5)).to_csv(files.input_csv, index=False)
    jobs.create(job_id, "batch", model_version=version, input="csv")

    app.tasks[SPLIT_TASK](job_id)

    record = jobs.get(job_id)
    assert record["status"] == "failed"
    assert "['probability_Gentoo']" in record["error"] and "rename" in record["error"]
    assert drain(app, BATCH_QUEUE) == []
    assert not files.chunks_dir.exists()


def test_chunks_are_queued_only_once_the_count_is_recorded(
    app: Celery, jobs: JobStore, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every score message goes out after the chunk count, total and chunk size are on the record, so a
    split delivered again knows which chunks may have been lost."""
    seen: list[tuple[list, dict]] = []
    send_task = app.send_task

    def recording_send(name: str, args: list, **kwargs: object):
        record = jobs.get(job_id)
        seen.append((args, {key: record.get(key) for key in ("chunks", "total", "chunk_rows")}))
        return send_task(name, args=args, **kwargs)

    monkeypatch.setattr(app, "send_task", recording_send)
    app.tasks[SPLIT_TASK](job_id)

    assert seen == [([job_id, chunk], {"chunks": CHUNKS, "total": ROWS, "chunk_rows": "4"}) for chunk in range(CHUNKS)]

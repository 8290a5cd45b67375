"""A batch step whose worker process dies each time it runs is failed after ``job_max_deliveries`` starts.

The broker delivers again a task whose process died (``task_reject_on_worker_lost``). Here the
deaths are the counted starts that never finished; the task bodies run in this process on
fakeredis and Celery's memory broker.
"""

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
from shared.jobs import JobStore, new_job_id
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
ROWS = 10
MAX_DELIVERIES = 2


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("delivery-models")
    options = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 5})
    return root, train_version(ModelStore(LocalStorage(root)), PENGUINS_CSV, options)["version"]


@pytest.fixture
def settings(tmp_path: Path, models_dir: tuple[Path, str]) -> Settings:
    shutil.copytree(models_dir[0] / "models", tmp_path / "models")
    return Settings(
        data_dir=tmp_path,
        broker_url="memory://",
        redis_url="redis://unused",
        job_chunk_rows=CHUNK_ROWS,
        job_max_deliveries=MAX_DELIVERIES,
    )


def drain(app: Celery, queue: str) -> list[tuple[str, list]]:
    messages = []
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            messages.append((message.headers["task"], message.decode()[0]))
    return messages


@pytest.fixture
def jobs() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), 3600)


@pytest.fixture
def app(settings: Settings, jobs: JobStore) -> Iterator[Celery]:
    app = make_celery(settings)
    drain(app, BATCH_QUEUE)
    drain(app, TRAINING_QUEUE)
    app.loader.import_default_modules()
    store = ModelStore(LocalStorage(settings.data_dir))
    app.predictq_context = WorkerContext(settings, jobs.client, jobs, store, ModelCache(store))
    yield app
    app.close()


@pytest.fixture
def job_id(jobs: JobStore, settings: Settings, models_dir: tuple[Path, str]) -> str:
    job_id = new_job_id()
    rows = pd.read_csv(PENGUINS_CSV).drop(columns="species").head(ROWS)
    write_json_input(JobFiles(settings.jobs_dir, job_id), json.loads(rows.to_json(orient="records")))
    jobs.create(job_id, "batch", model_version=models_dir[1], input="json")
    return job_id


@pytest.fixture
def split_job(jobs: JobStore, settings: Settings, job_id: str) -> str:
    assert jobs.start(job_id)
    total, chunks = split_input(JobFiles(settings.jobs_dir, job_id), CHUNK_ROWS)
    jobs.update(job_id, total=total, chunks=chunks, chunk_rows=CHUNK_ROWS)
    return job_id


def died(jobs: JobStore, job_id: str, step: str, times: int) -> None:
    """Starts of ``step`` whose process died before finishing: counted, nothing else done."""
    for _ in range(times):
        jobs.count_delivery(job_id, step)


def test_a_chunk_whose_process_died_each_time_fails_its_job_naming_the_chunk_and_why(
    app: Celery, jobs: JobStore, split_job: str
) -> None:
    """After MAX_DELIVERIES starts of chunk 1 that never finished, its next delivery fails the job
    without scoring: the error names the chunk, the likely cause and the setting."""
    died(jobs, split_job, "chunk 1", MAX_DELIVERIES)

    app.tasks[SCORE_TASK](split_job, 1)

    record = jobs.get(split_job)
    assert record["status"] == "failed"
    assert record["error"].startswith(f"chunk 1 was started {MAX_DELIVERIES} times and its worker process died")
    assert "out of memory" in record["error"]
    assert f"PREDICTQ_JOB_MAX_DELIVERIES={MAX_DELIVERIES}" in record["error"]
    assert not jobs.chunk_done(split_job, 1)


def test_a_chunk_delivered_again_within_the_limit_is_scored(app: Celery, jobs: JobStore, split_job: str) -> None:
    """One death fewer than the limit: the next delivery scores the chunk; other chunks count on their own."""
    died(jobs, split_job, "chunk 1", MAX_DELIVERIES - 1)
    died(jobs, split_job, "chunk 0", MAX_DELIVERIES)

    app.tasks[SCORE_TASK](split_job, 1)

    assert jobs.chunk_done(split_job, 1)
    assert jobs.get(split_job)["status"] == "running"


def test_a_scored_chunk_delivered_again_is_skipped_uncounted(app: Celery, jobs: JobStore, split_job: str) -> None:
    """Copies of a message for a chunk already scored neither score nor count: they cannot fail the job."""
    app.tasks[SCORE_TASK](split_job, 0)
    for _ in range(MAX_DELIVERIES + 2):
        app.tasks[SCORE_TASK](split_job, 0)

    assert jobs.get(split_job)["status"] == "running"
    assert jobs.count_delivery(split_job, "chunk 0") == 2  # the one real start, and this call


@pytest.mark.parametrize(
    ("task", "step"), [(SPLIT_TASK, "splitting the input"), (FINALIZE_TASK, "joining the results")]
)
def test_a_split_or_finalize_whose_process_died_each_time_fails_its_job(
    app: Celery, jobs: JobStore, job_id: str, task: str, step: str
) -> None:
    """The split and the finalize are counted the same way, each under its own step name."""
    if task == FINALIZE_TASK:
        assert jobs.start(job_id)
        jobs.update(job_id, total=ROWS, chunks=3, chunk_rows=CHUNK_ROWS)
    died(jobs, job_id, step, MAX_DELIVERIES)

    app.tasks[task](job_id)

    record = jobs.get(job_id)
    assert record["status"] == "failed"
    assert record["error"].startswith(f"{step} was started {MAX_DELIVERIES} times")
    assert drain(app, BATCH_QUEUE) == []

"""The model store's id: written once, recorded on each job by the API, checked by the worker (fakeredis)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.jobs import FAILED, KEY_PREFIX, QUEUED, SUCCEEDED, JobStore
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store_id import STORE_ID_KEY, STORE_ID_PATTERN, ensure_store_id, read_store_id, store_mismatch
from worker.context import ServableJobStore

RETENTION_S = 3600


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_new_store_gets_one_id_written_once(storage: LocalStorage) -> None:
    """The first call writes a random id at the store's root; later calls read that same id."""
    assert read_store_id(storage) is None

    first = ensure_store_id(storage)

    assert (storage.root / STORE_ID_KEY).read_text().strip() == first
    assert STORE_ID_PATTERN.fullmatch(first)
    assert ensure_store_id(storage) == first
    assert ensure_store_id(LocalStorage(storage.root)) == first


def test_two_stores_have_different_ids(tmp_path: Path) -> None:
    assert ensure_store_id(LocalStorage(tmp_path / "a")) != ensure_store_id(LocalStorage(tmp_path / "b"))


def test_processes_racing_to_create_the_id_agree_on_one(storage: LocalStorage) -> None:
    """Writers racing on a new store all return the one id that was stored first."""
    start = threading.Barrier(8)
    seen: list[str] = []

    def create() -> None:
        start.wait()
        seen.append(ensure_store_id(LocalStorage(storage.root)))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == 8 and set(seen) == {read_store_id(storage)}


def test_reading_never_creates_an_id(storage: LocalStorage) -> None:
    assert read_store_id(storage) is None
    assert not storage.root.exists()


def test_a_damaged_id_file_is_refused_naming_it(storage: LocalStorage) -> None:
    storage.write_bytes(STORE_ID_KEY, b"not an id\n")
    with pytest.raises(ValueError, match=f"store-id in {storage.root} holds no valid store id"):
        ensure_store_id(storage)


def test_the_mismatch_message_names_both_stores_the_worker_and_the_fix() -> None:
    message = store_mismatch("a" * 32, "b" * 32, "/srv/old/var", "predictq-7@host")
    assert message is not None
    assert "worker predictq-7@host" in message
    assert f"queued for model store {'a' * 32}" in message
    assert f"sees model store {'b' * 32} at /srv/old/var" in message
    assert "PREDICTQ_DATA_DIR" in message and "PREDICTQ_STORE_URL" in message
    assert "sees no model store at /gone" in store_mismatch("a" * 32, None, "/gone", "w")


def test_jobs_without_a_store_id_or_of_the_same_store_are_served() -> None:
    assert store_mismatch(None, "b" * 32, "/var", "w") is None
    assert store_mismatch("b" * 32, "b" * 32, "/var", "w") is None


# --- the worker's check ----------------------------------------------------------------------


def worker_jobs(redis_client: fakeredis.FakeRedis, storage: LocalStorage) -> ServableJobStore:
    return ServableJobStore(redis_client, RETENTION_S, storage, ensure_store_id(storage))


def test_the_worker_fails_a_job_of_another_store_with_the_cause(
    redis_client: fakeredis.FakeRedis, storage: LocalStorage
) -> None:
    """Reading a job queued for another store fails it, and the task sees a finished job it skips."""
    jobs = worker_jobs(redis_client, storage)
    JobStore(redis_client, RETENTION_S).create("j1", "batch", store_id="c" * 32)

    record = jobs.get("j1")

    assert record["status"] == FAILED
    assert f"queued for model store {'c' * 32}" in record["error"]
    assert f"sees model store {jobs.store_id} at {storage.root}" in record["error"]


def test_the_worker_serves_jobs_of_its_store_and_jobs_recorded_without_one(
    redis_client: fakeredis.FakeRedis, storage: LocalStorage
) -> None:
    jobs = worker_jobs(redis_client, storage)
    plain = JobStore(redis_client, RETENTION_S)
    plain.create("same", "batch", store_id=jobs.store_id)
    plain.create("older", "batch")

    assert jobs.get("same")["status"] == QUEUED
    assert jobs.get("older")["status"] == QUEUED


def test_the_worker_leaves_a_finished_job_as_it_is(redis_client: fakeredis.FakeRedis, storage: LocalStorage) -> None:
    jobs = worker_jobs(redis_client, storage)
    plain = JobStore(redis_client, RETENTION_S)
    plain.create("done", "batch", store_id="c" * 32)
    plain.succeed("done")

    assert jobs.get("done")["status"] == SUCCEEDED
    assert "error" not in jobs.get("done")


def test_a_store_made_anew_where_the_worker_looks_is_served(
    redis_client: fakeredis.FakeRedis, storage: LocalStorage
) -> None:
    """The worker started on a store since deleted and made again at the same place: it looks again and serves."""
    jobs = worker_jobs(redis_client, storage)
    (storage.root / STORE_ID_KEY).unlink()
    renewed = ensure_store_id(storage)
    JobStore(redis_client, RETENTION_S).create("j1", "batch", store_id=renewed)

    assert jobs.get("j1")["status"] == QUEUED
    assert jobs.store_id == renewed


# --- the API records it ----------------------------------------------------------------------


@pytest.fixture
def api_client(settings: Settings, save_model, species_model, redis_client: fakeredis.FakeRedis) -> FlaskClient:
    save_model(species_model)
    queue_settings = settings.model_copy(update={"broker_url": "memory://", "redis_url": "redis://unused"})
    app = create_app(queue_settings, redis_client=redis_client)
    app.testing = True
    return app.test_client()


def test_the_api_records_the_store_id_on_each_job(
    api_client: FlaskClient, settings: Settings, redis_client: fakeredis.FakeRedis, penguins
) -> None:
    """A job's record carries the id of the store its files were written to."""
    rows = json.loads(penguins.drop(columns="species").head(3).to_json(orient="records"))
    response = api_client.post("/jobs", json={"instances": rows})
    assert response.status_code == 202, response.get_json()

    stored = redis_client.hget(KEY_PREFIX + response.get_json()["job_id"], "store_id")
    assert stored.decode() == read_store_id(LocalStorage(settings.data_dir))
    assert "store_id" not in response.get_json()  # internal: not part of the public job view

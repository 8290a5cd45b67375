"""Models and job files on S3-compatible object storage: a real moto server on loopback, no shared disk.

Each "host" below is a Settings with its own data directory (its scratch space and model
cache) and the same store_url: whatever one host hands another must go through the bucket.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import fakeredis
import pandas as pd
import pytest
import requests

from api import create_app
from predictq.redis_server import free_port
from shared.batch import JobFiles, remove_chunks, score_chunk, split_input, write_results
from shared.errors import ModelIntegrityError
from shared.jobs import JobStore
from shared.lifecycle import train_version
from shared.serving import prediction_response
from shared.settings import Settings
from shared.storage import ObjectStorage, open_storage
from shared.store import ACTIVE_KEY, MODEL_FILE, MODELS_PREFIX, ONNX_FILE, ModelStore
from shared.training import TrainingOptions

pytestmark = pytest.mark.integration

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
OPTIONS = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 20})
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
PREFIX = "predictq"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
TOKEN = "s3-admin-token"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CHUNK_ROWS = 40


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port, stopped in teardown."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if requests.get(f"{url}/moto-api/", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


@pytest.fixture
def s3(s3_endpoint: str):
    """A boto3 client of the moto server: the test's view of the bucket, beside predictq's."""
    return boto3.client("s3", endpoint_url=s3_endpoint, **CREDENTIALS)


@pytest.fixture
def bucket(s3) -> str:
    """A new bucket for each test."""
    name = f"predictq-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def host(tmp_path: Path, s3_endpoint: str, bucket: str) -> Callable[[str], Settings]:
    """Settings of one host: its own data directory, the shared bucket as store_url."""

    def settings_of(name: str) -> Settings:
        return Settings(
            data_dir=tmp_path / name,
            store_url=f"s3://{bucket}/{PREFIX}",
            s3_endpoint_url=s3_endpoint,
            s3_access_key_id=CREDENTIALS["aws_access_key_id"],
            s3_secret_access_key=CREDENTIALS["aws_secret_access_key"],
            s3_region=CREDENTIALS["region_name"],
            broker_url="memory://",
            redis_url="redis://unused",
            admin_token=TOKEN,
            job_chunk_rows=CHUNK_ROWS,
        )

    return settings_of


@pytest.fixture
def object_keys(s3, bucket: str) -> Callable[[str], list[str]]:
    """Every key in the bucket under ``PREFIX/<prefix>``, relative to PREFIX."""

    def keys(prefix: str = "") -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/{prefix}")
        return sorted(item["Key"].removeprefix(f"{PREFIX}/") for page in pages for item in page.get("Contents", []))

    return keys


@pytest.fixture
def object_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (method, key) read through ObjectStorage from now on: the GETs predictq makes."""
    reads: list[tuple[str, str]] = []
    for method in ("read_bytes", "open_read", "get_file"):
        original = getattr(ObjectStorage, method)

        def recording(self, key, *args, _original=original, _method=method, **kwargs):
            reads.append((_method, key))
            return _original(self, key, *args, **kwargs)

        monkeypatch.setattr(ObjectStorage, method, recording)
    return reads


def files_under(directory: Path) -> list[str]:
    """Files (not directories) anywhere under ``directory``, relative to it."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def penguins(count: int) -> pd.DataFrame:
    table = pd.read_csv(PENGUINS_CSV).drop(columns=["species"]).head(count)
    table.insert(0, "penguin_id", [f"{i:04d}" for i in range(len(table))])
    return table


# --- the model store -----------------------------------------------------------------------


def test_open_storage_follows_store_url(host: Callable[[str], Settings], tmp_path: Path) -> None:
    """store_url picks ObjectStorage; without it the data directory stays the store."""
    storage = open_storage(host("api"))
    assert isinstance(storage, ObjectStorage)
    local = open_storage(Settings(data_dir=tmp_path / "local", store_url=None))
    assert not isinstance(local, ObjectStorage)


def test_model_is_saved_listed_activated_and_loaded_on_another_host(
    host: Callable[[str], Settings], object_keys: Callable[[str], list[str]]
) -> None:
    """A version trained on one host is listed, active and loadable on another, through the bucket only."""
    trainer = ModelStore.from_settings(host("trainer"))
    version = train_version(trainer, PENGUINS_CSV, OPTIONS)["version"]

    assert object_keys(MODELS_PREFIX) == sorted(
        [
            ACTIVE_KEY,
            f"models/{version}/manifest.json",
            f"models/{version}/{MODEL_FILE}",
            f"models/{version}/{ONNX_FILE}",
        ]
    )
    serving = ModelStore.from_settings(host("api"))
    assert serving.versions() == [version]
    assert serving.active_version() == version
    loaded = serving.load_active()
    rows = penguins(20).drop(columns=["penguin_id"])
    assert loaded.version == version
    assert prediction_response(loaded, rows) == prediction_response(trainer.load(version), rows)
    assert not files_under(host("trainer").data_dir / "models")  # nothing on the trainer's disk but cache


def test_activation_is_one_object_write(
    host: Callable[[str], Settings], s3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Switching the active version writes the ACTIVE object once, and a reader only ever sees a whole pointer."""
    store = ModelStore.from_settings(host("api"))
    first = train_version(store, PENGUINS_CSV, OPTIONS)["version"]
    second = train_version(store, PENGUINS_CSV, OPTIONS, activate="never")["version"]

    writes: list[str] = []
    for method in ("write_bytes", "put_file"):
        original = getattr(ObjectStorage, method)

        def recording(self, *args, _original=original, **kwargs):
            writes.append(args[0] if isinstance(args[0], str) else args[1])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ObjectStorage, method, recording)
    store.activate(second)
    assert writes == [ACTIVE_KEY]
    pointer = json.loads(s3.get_object(Bucket=bucket, Key=f"{PREFIX}/{ACTIVE_KEY}")["Body"].read())
    assert pointer["version"] == second

    reader = ModelStore.from_settings(host("reader"))
    seen: list[str | None] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_pointer() -> None:
        while not stop.is_set() and len(seen) < 2000:
            try:
                seen.append(reader.active_version())
            except BaseException as exc:  # a half-written pointer would be invalid JSON
                errors.append(exc)
                return

    thread = threading.Thread(target=read_pointer)
    thread.start()
    try:
        for version in [first, second] * 5:
            store.activate(version)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert seen
    assert set(seen) <= {first, second}


def test_tampered_model_object_is_refused_after_download(
    host: Callable[[str], Settings], s3, bucket: str, object_reads: list[tuple[str, str]]
) -> None:
    """A model object changed in the bucket fails its sha256 after download and is not cached."""
    version = train_version(ModelStore.from_settings(host("trainer")), PENGUINS_CSV, OPTIONS)["version"]
    key = f"{PREFIX}/models/{version}/{MODEL_FILE}"
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))

    api = host("api")
    with pytest.raises(ModelIntegrityError, match="fails its checksum"):
        ModelStore.from_settings(api).load(version)
    assert ("read_bytes", f"models/{version}/{MODEL_FILE}") in object_reads
    assert files_under(api.model_cache_dir) == []


def test_local_cache_serves_later_loads_only_while_its_checksum_matches(
    host: Callable[[str], Settings], s3, bucket: str, object_reads: list[tuple[str, str]]
) -> None:
    """The first load downloads and caches the model; later loads read no model object from the bucket,
    even once it is deleted there; a cached file that no longer matches the manifest is never used."""
    version = train_version(ModelStore.from_settings(host("trainer")), PENGUINS_CSV, OPTIONS)["version"]
    worker = host("worker")
    model_key = f"models/{version}/{MODEL_FILE}"

    ModelStore.from_settings(worker).load(version)
    assert object_reads.count(("read_bytes", model_key)) == 1
    assert files_under(worker.model_cache_dir) == [f"{version}/{MODEL_FILE}"]

    object_reads.clear()
    again = ModelStore.from_settings(worker).load(version)  # a new process on the same host
    assert again.version == version
    assert ("read_bytes", model_key) not in object_reads

    original = s3.get_object(Bucket=bucket, Key=f"{PREFIX}/{model_key}")["Body"].read()
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/{model_key}")
    assert ModelStore.from_settings(worker).load(version).version == version  # from the cache alone

    cached = worker.model_cache_dir / version / MODEL_FILE
    cached.write_bytes(cached.read_bytes()[:-10])
    with pytest.raises(ModelIntegrityError, match="missing"):
        ModelStore.from_settings(worker).load(version)  # the bad copy is ignored, the bucket has none

    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{model_key}", Body=original)
    object_reads.clear()
    assert ModelStore.from_settings(worker).load(version).version == version
    assert object_reads.count(("read_bytes", model_key)) == 1
    assert cached.read_bytes() == original  # the cache is repaired from the bucket


# --- batch jobs across hosts ---------------------------------------------------------------


def test_batch_job_runs_across_hosts_without_a_shared_disk(
    host: Callable[[str], Settings],
    object_keys: Callable[[str], list[str]],
    object_reads: list[tuple[str, str]],
) -> None:
    """A CSV job submitted to the API is split on one worker host, scored on two, joined on the
    second, and its results streamed by the API from the bucket; no host's disk holds another's files."""
    api, worker_a, worker_b = host("api"), host("worker-a"), host("worker-b")
    version = train_version(ModelStore.from_settings(api), PENGUINS_CSV, OPTIONS)["version"]
    redis_client = fakeredis.FakeRedis()
    app = create_app(api, redis_client=redis_client)
    app.testing = True
    client = app.test_client()
    rows = penguins(150)

    response = client.post("/jobs?id_column=penguin_id", data=rows.to_csv(index=False), content_type="text/csv")
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]
    assert object_keys(f"jobs/{job_id}/") == [f"jobs/{job_id}/input.csv"]
    assert files_under(api.jobs_dir) == []  # the upload went to the bucket, not left on the API host

    # What the worker's split, score and finalize tasks do, each on the host that took the message.
    jobs = JobStore(redis_client, api.job_retention_s)
    record = jobs.get(job_id)
    assert jobs.start(job_id)
    split_files = JobFiles(worker_a.jobs_dir, job_id, open_storage(worker_a))
    total, chunks = split_input(split_files, CHUNK_ROWS, record["id_column"])
    assert (total, chunks) == (150, 4)
    jobs.update(job_id, total=total, chunks=chunks, chunk_rows=CHUNK_ROWS)
    models = {name: ModelStore.from_settings(s).load(version) for name, s in (("a", worker_a), ("b", worker_b))}
    for chunk in range(chunks):
        name, settings = ("a", worker_a) if chunk % 2 == 0 else ("b", worker_b)
        files = JobFiles(settings.jobs_dir, job_id, open_storage(settings))
        jobs.record_chunk(job_id, chunk, score_chunk(files, chunk, models[name], CHUNK_ROWS, record["id_column"]))
    assert jobs.claim(job_id, "finalize")
    join_files = JobFiles(worker_b.jobs_dir, job_id, open_storage(worker_b))
    quality = write_results(join_files, chunks, models["b"], job_id, record["id_column"])
    assert jobs.succeed(job_id, quality=quality)
    remove_chunks(join_files)

    assert object_keys(f"jobs/{job_id}/") == [
        f"jobs/{job_id}/{name}" for name in ("input.csv", "result.csv", "result.json")
    ]
    for settings in (api, worker_a, worker_b):
        assert files_under(settings.jobs_dir) == [], settings.data_dir.name

    object_reads.clear()
    expected = prediction_response(models["a"], rows.drop(columns=["penguin_id"]))
    with client.get(f"/jobs/{job_id}/result") as result:
        assert result.status_code == 200
        assert result.mimetype == "application/json"
        assert result.is_streamed
        blocks = list(result.response)
        body = json.loads(b"".join(blocks))
        assert result.content_length == sum(map(len, blocks))
    assert len(blocks) > 1
    assert object_reads == [("open_read", f"jobs/{job_id}/result.json")]  # streamed, never read whole
    assert body["job_id"] == job_id
    assert body["model_version"] == version
    assert body["ids"] == rows["penguin_id"].tolist()
    assert body["predictions"] == expected["predictions"]
    assert body["warnings"] == expected["warnings"]

    with client.get(f"/jobs/{job_id}/result?format=csv") as result:
        assert result.status_code == 200
        assert result.mimetype == "text/csv"
        table = pd.read_csv(io.BytesIO(result.get_data()), dtype={"penguin_id": str})
    assert list(table.columns) == [*rows.columns, "prediction", *(f"probability_{c}" for c in CLASSES)]
    assert table["penguin_id"].tolist() == rows["penguin_id"].tolist()
    assert table["prediction"].tolist() == expected["predictions"]


def test_json_job_input_goes_to_the_bucket_and_a_refused_upload_leaves_nothing(
    host: Callable[[str], Settings], object_keys: Callable[[str], list[str]]
) -> None:
    """JSON rows are stored as jobs/<id>/input.json; an upload refused at validation leaves no object or file."""
    api = host("api")
    train_version(ModelStore.from_settings(api), PENGUINS_CSV, OPTIONS)
    app = create_app(api, redis_client=fakeredis.FakeRedis())
    client = app.test_client()
    instances = json.loads(penguins(3).drop(columns=["penguin_id"]).to_json(orient="records"))

    response = client.post("/jobs", json={"instances": instances})
    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert object_keys("jobs/") == [f"jobs/{job_id}/input.json"]
    assert json.loads(open_storage(api).read_bytes(f"jobs/{job_id}/input.json")) == instances

    refused = client.post("/jobs", data=b"penguin_id,island\n1,Dream\n", content_type="text/csv")
    assert refused.status_code == 422
    assert object_keys("jobs/") == [f"jobs/{job_id}/input.json"]
    assert files_under(api.jobs_dir) == []


def test_training_upload_is_fetched_by_the_worker_host(
    host: Callable[[str], Settings], object_keys: Callable[[str], list[str]]
) -> None:
    """A retrain upload is stored in the bucket; a worker host fetches it to train, then drops its copy."""
    api, worker = host("api"), host("worker")
    app = create_app(api, redis_client=fakeredis.FakeRedis())
    response = app.test_client().post(
        "/retrain",
        data={"file": (io.BytesIO(PENGUINS_CSV.read_bytes()), "penguins.csv"), "target": "species"},
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]
    assert object_keys("jobs/") == [f"jobs/{job_id}/training.csv"]
    assert files_under(api.jobs_dir) == []

    files = JobFiles(worker.jobs_dir, job_id, open_storage(worker))
    with files.local_copy(files.training_csv) as data_path:
        assert data_path.read_bytes() == PENGUINS_CSV.read_bytes()
        result = train_version(ModelStore.from_settings(worker), data_path, OPTIONS)
    assert files_under(worker.jobs_dir) == []
    assert ModelStore.from_settings(api).active_version() == result["version"]


# --- a real worker process ------------------------------------------------------------------


def test_real_worker_runs_batch_and_retrain_through_the_bucket(
    host: Callable[[str], Settings],
    redis_url: str,
    make_app,
    workers,
    wait_for_job,
    object_keys: Callable[[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `predictq worker` process with its own data directory scores a CSV job and trains on an upload
    that the API stored in the bucket; the API serves the result from there. Keys reach the worker through
    the standard AWS variables, as on a host with an instance role or profile."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    api = host("api").model_copy(update={"redis_url": redis_url, "broker_url": None, "model_check_interval_s": 0})
    worker = host("worker").model_copy(
        update={"redis_url": redis_url, "broker_url": None, "s3_access_key_id": None, "s3_secret_access_key": None}
    )
    version = train_version(ModelStore.from_settings(api), PENGUINS_CSV, OPTIONS)["version"]
    workers.start(worker)
    client = make_app(api).test_client()
    rows = penguins(100)

    submitted = client.post("/jobs?id_column=penguin_id", data=rows.to_csv(index=False), content_type="text/csv")
    assert submitted.status_code == 202, submitted.get_data(as_text=True)
    job_id = submitted.get_json()["job_id"]
    record = wait_for_job(client, job_id)
    assert record["status"] == "succeeded", record
    with client.get(f"/jobs/{job_id}/result") as response:
        body = response.get_json()
    expected = prediction_response(ModelStore.from_settings(api).load(version), rows.drop(columns=["penguin_id"]))
    assert body["ids"] == rows["penguin_id"].tolist()
    assert body["predictions"] == expected["predictions"]
    assert object_keys(f"jobs/{job_id}/") == [f"jobs/{job_id}/{n}" for n in ("input.csv", "result.csv", "result.json")]

    retrain = client.post(
        "/retrain",
        data={
            "file": (io.BytesIO(PENGUINS_CSV.read_bytes()), "penguins.csv"),
            "target": "species",
            "activate": "never",
        },
        content_type="multipart/form-data",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert retrain.status_code == 202, retrain.get_data(as_text=True)
    record = wait_for_job(client, retrain.get_json()["job_id"])
    assert record["status"] == "succeeded", record
    assert record["result"]["version"] in ModelStore.from_settings(api).versions()
    assert files_under(api.jobs_dir) == []
    assert files_under(worker.jobs_dir) == []

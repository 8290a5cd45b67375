"""The store id on real workers: a worker that sees another model store than the API refuses its jobs,
naming the cause; the id lives in the store itself, on disk or in the bucket."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pandas as pd
import pytest
import redis
from flask.testing import FlaskClient

from shared.jobs import KEY_PREFIX
from shared.settings import Settings
from shared.storage import LocalStorage, open_storage
from shared.store_id import STORE_ID_KEY, ensure_store_id, read_store_id

if TYPE_CHECKING:
    from conftest import Workers

pytestmark = pytest.mark.integration

ROWS = 6
# moto takes any keys; these are the ones its documentation uses.
MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def submit(client: FlaskClient, penguin_sample: Callable[..., pd.DataFrame]) -> str:
    rows = json.loads(penguin_sample(ROWS).to_json(orient="records"))
    response = client.post("/jobs", json={"instances": rows})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def test_a_worker_of_the_same_store_serves_the_job_recorded_with_its_store_id(
    client: FlaskClient,
    worker,
    wait_for_job: Callable[..., dict],
    redis_client: redis.Redis,
    data_dir: Path,
    penguin_sample: Callable[..., pd.DataFrame],
) -> None:
    """The API records the store id on the job; the worker that sees that store serves it."""
    job_id = submit(client, penguin_sample)
    assert wait_for_job(client, job_id)["status"] == "succeeded"
    assert redis_client.hget(KEY_PREFIX + job_id, "store_id") == read_store_id(LocalStorage(data_dir))


def test_a_worker_of_another_data_dir_fails_the_job_naming_the_cause(
    client: FlaskClient,
    workers: Workers,
    settings: Settings,
    data_dir: Path,
    tmp_path: Path,
    wait_for_job: Callable[..., dict],
    penguin_sample: Callable[..., pd.DataFrame],
) -> None:
    """A stray worker on the same Redis but another data dir (holding the same model, even) takes the job and
    fails it with both store ids and the setting to fix, not with a missing file as an internal error."""
    stray = settings.model_copy(update={"data_dir": tmp_path / "stray"})
    shutil.copytree(data_dir / "models", stray.data_dir / "models")
    workers.start(stray)

    record = wait_for_job(client, submit(client, penguin_sample))

    assert record["status"] == "failed", record
    assert "internal error" not in record["error"] and "PREDICTQ_DATA_DIR" in record["error"], record["error"]
    api_store, stray_store = read_store_id(LocalStorage(data_dir)), read_store_id(LocalStorage(stray.data_dir))
    assert api_store != stray_store
    assert f"queued for model store {api_store}" in record["error"]
    assert f"sees model store {stray_store} at {stray.data_dir}" in record["error"]
    assert f"refusing job {record['job_id']}" in workers.logs()


def test_a_worker_whose_data_dir_was_deleted_refuses_and_creates_nothing_there(
    client: FlaskClient,
    workers: Workers,
    settings: Settings,
    tmp_path: Path,
    wait_for_job: Callable[..., dict],
    penguin_sample: Callable[..., pd.DataFrame],
) -> None:
    """The worker's data dir removed under it (a deleted checkout): it fails the job, saying it sees no store,
    and writes no new store id into the deleted place."""
    stray = settings.model_copy(update={"data_dir": tmp_path / "gone"})
    stray.data_dir.mkdir()
    workers.start(stray)
    shutil.rmtree(stray.data_dir)

    record = wait_for_job(client, submit(client, penguin_sample))

    assert record["status"] == "failed", record
    assert f"sees no model store at {stray.data_dir}" in record["error"]
    assert not (stray.data_dir / STORE_ID_KEY).exists()


def test_the_store_id_lives_in_the_bucket_and_every_host_reads_the_same(moto_endpoint: str, tmp_path: Path) -> None:
    """On object storage the id is one object under the prefix: hosts with their own data dirs agree on it,
    none keeps it on its disk, and another prefix is another store."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, **MOTO_CREDENTIALS)
    bucket = f"predictq-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)

    def storage_of(host: str, prefix: str = "prod"):
        return open_storage(
            Settings(
                data_dir=tmp_path / host,
                store_url=f"s3://{bucket}/{prefix}",
                s3_endpoint_url=moto_endpoint,
                s3_access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
                s3_secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
                s3_region=MOTO_CREDENTIALS["region_name"],
            )
        )

    api_store = ensure_store_id(storage_of("api"))

    assert ensure_store_id(storage_of("worker")) == api_store
    assert read_store_id(storage_of("other-worker")) == api_store
    stored = s3.get_object(Bucket=bucket, Key=f"prod/{STORE_ID_KEY}")["Body"].read().decode().strip()
    assert stored == api_store
    assert not (tmp_path / "api" / STORE_ID_KEY).exists() and not (tmp_path / "worker" / STORE_ID_KEY).exists()
    assert ensure_store_id(storage_of("api", prefix="staging")) != api_store

"""POST /retrain on a real worker with activate=if_better, hot swap in the API, and rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.jobs import JobStore, new_job_id
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.store import ModelStore
from shared.training import TrainingOptions
from worker.celery_app import RETRAIN_TASK

pytestmark = pytest.mark.integration

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
TARGET = "species"
FAST_FOREST = {"n_estimators": 20}
ROW = {
    "island": "Biscoe",
    "bill_length_mm": 46.1,
    "bill_depth_mm": 13.2,
    "flipper_length_mm": 211,
    "body_mass_g": 4500,
    "sex": "female",
    "year": 2008,
}


@pytest.fixture
def weak_version(model_store: ModelStore) -> str:
    """The active model is a majority-class dummy: any real model scores better on the holdout."""
    options = TrainingOptions(target=TARGET, estimator="sklearn.dummy.DummyClassifier", allow_dotted_path=True)
    return train_version(model_store, PENGUINS_CSV, options)["version"]


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def served_version(client) -> str:
    response = client.post("/predict", json={"instances": [ROW]})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["model_version"]


def retrain(client, wait_for_job, auth: dict, body: dict) -> dict:
    response = client.post("/retrain", json=body, headers=auth)
    submitted = response.get_json()
    assert response.status_code == 202, submitted
    assert submitted["kind"] == "retrain"
    assert response.headers["Location"] == submitted["status_url"]
    record = wait_for_job(client, submitted["job_id"], timeout_s=120)
    assert record["status"] == "succeeded", record
    return record


def test_better_model_is_promoted_and_served_without_restart(
    make_app, settings, weak_version, worker, wait_for_job, auth
) -> None:
    """A retrained forest beats the active dummy, is promoted, and the same app serves it on the next request."""
    client = make_app(settings).test_client()
    assert served_version(client) == weak_version

    record = retrain(client, wait_for_job, auth, {"estimator": "random_forest", "params": FAST_FOREST})

    result = record["result"]
    assert result["promoted"] is True, result
    assert result["active_version"] == weak_version
    assert result["metric"] == "macro_f1"
    assert result["candidate_score"] > result["active_score"]
    assert ">=" in result["reason"]
    assert record["model_version"] == result["version"] != weak_version
    assert client.get("/models").get_json()["active_version"] == result["version"]
    assert served_version(client) == result["version"]


def test_worse_model_is_kept_out(client, trained_version, worker, wait_for_job, auth) -> None:
    """A logistic model regularised to near-constant output (C=1e-6) scores below the active forest: not promoted."""
    record = retrain(
        client, wait_for_job, auth, {"estimator": "logistic", "params": {"C": 1e-6}, "activate": "if_better"}
    )

    result = record["result"]
    assert result["promoted"] is False, result
    assert result["active_version"] == trained_version
    assert result["candidate_score"] < result["active_score"]
    assert "kept the active model" in result["reason"]
    assert result["version"] != trained_version
    # The candidate is kept as a version, just not activated.
    models = client.get("/models").get_json()
    assert models["active_version"] == trained_version
    assert result["version"] in [m["version"] for m in models["models"]]
    assert served_version(client) == trained_version
    # A finished retrain's result is the same account.
    with client.get(f"/jobs/{record['job_id']}/result") as response:
        assert response.status_code == 200
        assert response.get_json() == result


def test_activate_rolls_back_to_an_earlier_version(client, model_store, trained_version, auth) -> None:
    """POST /models/<version>/activate switches the active model back; /predict serves it on the next request."""
    newer = train_version(
        model_store, PENGUINS_CSV, TrainingOptions(target=TARGET, estimator="logistic"), activate="always"
    )["version"]
    assert served_version(client) == newer

    response = client.post(f"/models/{trained_version}/activate", headers=auth)

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"active_version": trained_version}
    assert served_version(client) == trained_version
    assert model_store.active_version() == trained_version


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "{token}", "Basic {token}"],
    ids=["missing", "wrong", "no-scheme", "not-bearer"],
)
def test_admin_endpoints_refuse_a_missing_or_wrong_token(
    client, settings, redis_client, trained_version, check_problem, authorization
) -> None:
    """Retrain and activate without the right bearer token answer 401 problem JSON and queue nothing."""
    headers = {"Authorization": authorization.format(token=settings.admin_token)} if authorization else {}

    retrain_response = client.post("/retrain", json={"estimator": "random_forest"}, headers=headers)
    activate_response = client.post(f"/models/{trained_version}/activate", headers=headers)

    for response in (retrain_response, activate_response):
        check_problem(response, 401, "Unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert redis_client.keys("predictq:job:*") == []
    assert redis_client.llen("training") == 0


def test_worker_refuses_training_data_outside_the_data_directory(
    client, settings, model_store, trained_version, worker, wait_for_job, tmp_path, redis_client
) -> None:
    """A retrain record whose data_path leads outside the data directory (written to Redis by anyone but the API,
    which refuses such a path) is failed by the worker without reading the file: no version is saved."""
    outside = tmp_path / "outside" / "penguins.csv"
    outside.parent.mkdir()
    outside.write_bytes(PENGUINS_CSV.read_bytes())  # a table the worker could train on, were it allowed
    assert not outside.resolve().is_relative_to(settings.data_dir.resolve())
    job_id = new_job_id()
    options = {
        "data_path": str(outside), "activate": "always", "target": TARGET, "task": None,
        "estimator": "random_forest", "params": FAST_FOREST, "out_of_range_policy": "warn", "data_uploaded": False,
    }  # fmt: skip
    JobStore(redis_client, settings.job_retention_s).create(job_id, "retrain", options=options)
    client.application.extensions["predictq"].celery.send_task(RETRAIN_TASK, args=[job_id])

    record = wait_for_job(client, job_id)

    assert record["status"] == "failed", record
    assert record["error"] == "The training data is outside the data directory; the retrain is refused"
    assert str(outside) not in record["error"]
    assert model_store.versions() == [trained_version]
    assert model_store.active_version() == trained_version

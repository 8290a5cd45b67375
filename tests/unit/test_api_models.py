"""GET /models and GET /models/<version>."""

from __future__ import annotations

from flask.testing import FlaskClient

from shared.store import ModelStore
from shared.training import TrainedModel


def test_no_models_yet(client: FlaskClient) -> None:
    """Before training the list is empty and nothing is active."""
    response = client.get("/models")

    assert response.status_code == 200
    assert response.get_json() == {"active_version": None, "models": []}


def test_list_shows_every_version_newest_first_and_which_is_active(
    client: FlaskClient, species_model: TrainedModel, mass_model: TrainedModel, save_model
) -> None:
    """Each version is summarised, newest first, with exactly the active one flagged."""
    first = save_model(species_model)
    second = save_model(mass_model, activate=False)

    body = client.get("/models").get_json()

    assert body["active_version"] == first
    assert [(m["version"], m["active"]) for m in body["models"]] == [(second, False), (first, True)]
    newest = body["models"][0]
    assert (newest["task"], newest["target"], newest["estimator"]) == ("regression", "body_mass_g", "random_forest")
    assert newest["metrics"] == mass_model.metrics
    assert set(newest) == {
        "version",
        "created_at",
        "task",
        "target",
        "estimator",
        "metrics",
        "serving_path",
        "serving_reason",
        "active",
    }


def test_show_returns_the_manifest_and_whether_it_is_active(
    client: FlaskClient, store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """GET /models/<version> is the stored manifest (the training file by name only), the serving
    path and the active flag."""
    version = save_model(species_model)
    inactive = save_model(species_model, activate=False)

    shown = client.get(f"/models/{version}")

    assert shown.status_code == 200
    manifest = store.manifest(version)
    serving = {"serving_path": manifest["serving"]["path"], "serving_reason": manifest["serving"]["reason"]}
    data = {k: v for k, v in manifest["training_data"].items() if k != "path"} | {"file": "penguins.csv"}
    assert shown.get_json() == {**manifest, "training_data": data, **serving, "integrity": "ok", "active": True}
    assert client.get(f"/models/{inactive}").get_json()["active"] is False


def test_public_view_hides_the_training_path_and_holdout_targets(
    client: FlaskClient, store: ModelStore, mass_model: TrainedModel, save_model
) -> None:
    """Neither the training host's directories nor a regressor's holdout target values are shown."""
    version = save_model(mass_model)
    stored = store.manifest(version)
    assert stored["training_data"]["path"].startswith("/") and stored["diagnostics"]["actual"]

    body = client.get(f"/models/{version}").get_json()

    assert "path" not in body["training_data"]
    assert body["training_data"]["file"] == "penguins.csv"
    assert body["diagnostics"] == {"holdout_points": len(stored["diagnostics"]["actual"])}
    assert stored["training_data"]["path"] not in client.get(f"/models/{version}").get_data(as_text=True)


def test_a_tampered_version_reports_its_integrity_and_cannot_be_activated(
    make_client, store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """A changed model file: GET /models/<v> says "checksum mismatch"; activating it is a 409, nothing switched."""
    active = save_model(species_model)
    tampered = save_model(species_model, activate=False)
    model_file = store.storage.root / "models" / tampered / "model.joblib"
    model_file.write_bytes(model_file.read_bytes() + b"appended")
    client = make_client(admin_token="t0ken")

    shown = client.get(f"/models/{tampered}").get_json()
    response = client.post(f"/models/{tampered}/activate", headers={"Authorization": "Bearer t0ken"})

    assert shown["integrity"] == "checksum mismatch"
    assert client.get(f"/models/{active}").get_json()["integrity"] == "ok"
    assert response.status_code == 409
    problem = response.get_json()
    assert problem["title"] == "Model integrity check failed"
    assert tampered in problem["detail"] and "checksum" in problem["detail"]
    assert store.active_version() == active

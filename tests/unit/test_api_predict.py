"""POST /predict: train/serve consistency, out-of-range policies and hot swap over HTTP."""

from __future__ import annotations

import fakeredis
import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.compiled import PARITY_TOLERANCE
from shared.inputs import ABOVE_MAX, MISSING, prepare
from shared.settings import Settings
from shared.training import TrainedModel


def instances_of(frame: pd.DataFrame) -> list[dict]:
    """Rows as a JSON client would send them: plain numbers and strings, null for NA."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def expected_frame(trained: TrainedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as training transformed its own table (read from CSV, not JSON)."""
    return prepare(frame, trained.schema).frame


@pytest.mark.parametrize("trained_name", ["species_model", "mass_model"])
def test_predictions_equal_the_fitted_pipeline_on_every_row(
    request: pytest.FixtureRequest, trained_name: str, save_model, client: FlaskClient, penguins: pd.DataFrame
) -> None:
    """Every row of the dataset, sent as JSON, gets exactly what the in-process pipeline predicts."""
    trained: TrainedModel = request.getfixturevalue(trained_name)
    version = save_model(trained)
    features = penguins[trained.schema.names]

    response = client.post("/predict", json={"instances": instances_of(features)})

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model_version"] == version
    assert len(body["predictions"]) == len(penguins) == 344
    np.testing.assert_array_equal(body["predictions"], trained.pipeline.predict(expected_frame(trained, penguins)))


def test_probabilities_equal_predict_proba(
    species_model: TrainedModel, save_model, client: FlaskClient, penguins
) -> None:
    """Each row's probabilities are predict_proba's, keyed by class; labels agree with predict."""
    save_model(species_model)
    frame = expected_frame(species_model, penguins)
    classes = list(species_model.pipeline.classes_)

    response = client.post("/predict", json={"instances": instances_of(penguins[species_model.schema.names])})

    body = response.get_json()
    assert [list(row) for row in body["probabilities"]] == [classes] * len(penguins)
    received = np.array([[row[c] for c in classes] for row in body["probabilities"]])
    # The compiled path sums tree votes in float32: equal within the parity tolerance checked at training.
    np.testing.assert_allclose(received, species_model.pipeline.predict_proba(frame), rtol=0, atol=PARITY_TOLERANCE)


def test_regression_answers_have_no_probabilities(
    mass_model: TrainedModel, save_model, client: FlaskClient, penguins
) -> None:
    """A regressor's answer has numbers and warnings, no probabilities."""
    save_model(mass_model)

    body = client.post(
        "/predict", json={"instances": instances_of(penguins.head(3)[mass_model.schema.names])}
    ).get_json()

    assert set(body) == {"model_version", "predictions", "warnings"}
    assert all(isinstance(p, float) for p in body["predictions"])


def test_target_column_may_be_sent_along(
    species_model: TrainedModel, save_model, client: FlaskClient, penguins
) -> None:
    """Rows copied whole from the training table (target included) are accepted; the target is unused."""
    save_model(species_model)
    rows = instances_of(penguins.head(5))
    for row in rows:
        row["species"] = "Emperor"  # a value the model never predicts cannot leak into the answer

    response = client.post("/predict", json={"instances": rows})

    assert response.status_code == 200
    expected = species_model.pipeline.predict(expected_frame(species_model, penguins.head(5)))
    np.testing.assert_array_equal(response.get_json()["predictions"], expected)


def test_missing_values_in_the_dataset_are_reported_per_row(
    species_model: TrainedModel, save_model, client: FlaskClient, penguins: pd.DataFrame
) -> None:
    """Rows with NA in the table (null in JSON) are predicted and reported as missing, per field."""
    save_model(species_model)
    features = penguins[species_model.schema.names]

    body = client.post("/predict", json={"instances": instances_of(features)}).get_json()

    reported = {(w["row"], w["feature"]) for w in body["warnings"] if w["kind"] == MISSING}
    expected = {(row, name) for name in features for row in np.flatnonzero(features[name].isna())}
    assert reported == expected
    assert (3, "sex") in reported  # the fourth penguin was not measured at all


def test_warn_policy_predicts_the_value_as_sent(mass_ridge: TrainedModel, save_model, client: FlaskClient) -> None:
    """warn: an out-of-range row is predicted unclipped and the warning says so."""
    save_model(mass_ridge, policy="warn")
    row, clipped = out_of_range_row(mass_ridge)

    body = client.post("/predict", json={"instances": [row]}).get_json()

    assert body["predictions"] == pytest.approx([ridge_predict(mass_ridge, row)], rel=PARITY_TOLERANCE)
    assert body["predictions"] != [ridge_predict(mass_ridge, clipped)]
    (warning,) = body["warnings"]
    assert (warning["feature"], warning["kind"], warning["value"]) == ("flipper_length_mm", ABOVE_MAX, 400)


def test_clip_policy_predicts_the_clipped_value(mass_ridge: TrainedModel, save_model, client: FlaskClient) -> None:
    """clip: an out-of-range row is predicted as if sent at the training bound, and reported."""
    save_model(mass_ridge, policy="clip")
    row, clipped = out_of_range_row(mass_ridge)

    body = client.post("/predict", json={"instances": [row]}).get_json()

    assert body["predictions"] == pytest.approx([ridge_predict(mass_ridge, clipped)], rel=PARITY_TOLERANCE)
    assert body["predictions"] != [ridge_predict(mass_ridge, row)]
    (warning,) = body["warnings"]
    assert (warning["kind"], warning["value"]) == (ABOVE_MAX, 400)
    assert "clipped" in warning["detail"]


def test_reject_policy_answers_422_naming_the_value(
    mass_ridge: TrainedModel, save_model, client: FlaskClient, problem_of
) -> None:
    """reject: an out-of-range row fails the request with its row, field and the range."""
    save_model(mass_ridge, policy="reject")
    row, _ = out_of_range_row(mass_ridge)

    body = problem_of(client.post("/predict", json={"instances": [row, row]}), 422)

    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "flipper_length_mm"), (1, "flipper_length_mm")]
    assert "400" in body["errors"][0]["message"]
    assert str(mass_ridge.schema["flipper_length_mm"].training_max) in body["errors"][0]["message"]


def out_of_range_row(trained: TrainedModel) -> tuple[dict, dict]:
    """A Gentoo with a 400 mm flipper, and the same row at the training maximum."""
    row = {
        "species": "Gentoo",
        "island": "Biscoe",
        "bill_length_mm": 47.0,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 400,
        "sex": "male",
        "year": 2008,
    }
    return row, {**row, "flipper_length_mm": trained.schema["flipper_length_mm"].training_max}


def ridge_predict(trained: TrainedModel, row: dict) -> float:
    frame = pd.DataFrame([row], dtype=object)
    return float(trained.pipeline.predict(prepare(frame, trained.schema).frame)[0])


def test_newly_activated_model_is_served_without_restart(
    species_model: TrainedModel, mass_model: TrainedModel, save_model, client: FlaskClient, penguins
) -> None:
    """After activating another version (even another task) the same app answers with it."""
    rows = instances_of(penguins.head(2))  # every column: each model ignores the other's target
    first = save_model(species_model)
    assert client.post("/predict", json={"instances": rows}).get_json()["model_version"] == first

    second = save_model(mass_model)
    body = client.post("/predict", json={"instances": rows}).get_json()

    assert body["model_version"] == second
    assert "probabilities" not in body
    assert client.get("/readyz").get_json()["model_version"] == second


def test_rows_beyond_sync_max_rows_are_queued_as_a_job(
    species_model: TrainedModel, save_model, settings: Settings, penguins
) -> None:
    """More rows than sync_max_rows are not scored inline: the answer is 202 with the job's URL."""
    version = save_model(species_model)
    app = create_app(
        settings.model_copy(update={"sync_max_rows": 2, "broker_url": "memory://"}),
        redis_client=fakeredis.FakeRedis(),
    )

    response = app.test_client().post("/predict", json={"instances": instances_of(penguins.head(3))})

    assert response.status_code == 202
    body = response.get_json()
    assert "predictions" not in body
    assert body["model_version"] == version
    assert body["progress"]["total"] == 3
    assert response.headers["Location"].endswith(f"/jobs/{body['job_id']}")

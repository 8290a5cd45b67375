"""The compiled serving path: numpy preprocessing and ONNX, checked at training, verified at load."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient

from shared.compiled import PARITY_TOLERANCE, engine_for
from shared.engine import ONNX, SKLEARN, TIE_TOLERANCE, DesignMatrix, Engine, labels_from
from shared.errors import ModelIntegrityError
from shared.features import COERCE_STEP, after_coercion
from shared.inputs import MISSING, UNKNOWN_CATEGORY, prepare
from shared.request_rows import prepare_small
from shared.store import MANIFEST_FILE, MODEL_FILE, ONNX_FILE, ModelStore
from shared.training import TrainedModel, TrainingOptions, train


@pytest.fixture(scope="module")
def species_logistic(penguins_table: pd.DataFrame) -> TrainedModel:
    """A linear classifier: its ONNX graph takes float64 rows as they are."""
    return train(penguins_table, TrainingOptions(target="species", estimator="logistic"))


@pytest.fixture(scope="module")
def species_boosting(penguins_table: pd.DataFrame) -> TrainedModel:
    """A classifier today's skl2onnx cannot convert."""
    params = {"max_iter": 10, "max_depth": 3}
    return train(penguins_table, TrainingOptions(target="species", estimator="hist_gradient_boosting", params=params))


def instances_of(frame: pd.DataFrame) -> list[dict]:
    """Rows as a JSON client would send them: plain numbers and strings, null for NA."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def hostile_rows(penguins: pd.DataFrame) -> pd.DataFrame:
    """Every penguin, plus unknown categories and more missing values than the table has."""
    rows = penguins.copy()
    rows.loc[[5, 50, 150], "island"] = "Atlantis"
    rows.loc[[6, 60], "species"] = "Emperor"
    rows.loc[[7, 70, 170], "sex"] = "unknown"
    rows.loc[[8, 80], "island"] = None
    rows.loc[[9, 90], ["bill_length_mm", "year"]] = np.nan
    return rows


def version_dir(store: ModelStore, version: str) -> Path:
    return store.storage.root / "models" / version


def classes_in(body: dict, classes: list) -> np.ndarray:
    return np.array([[row[str(c)] for c in classes] for row in body["probabilities"]])


@pytest.mark.parametrize("trained_name", ["species_model", "mass_model", "mass_ridge"])
def test_design_matrix_equals_the_fitted_preprocessing_bit_for_bit(
    request: pytest.FixtureRequest, trained_name: str, penguins: pd.DataFrame
) -> None:
    """Both prepared forms build exactly the matrix the fitted ColumnTransformer gives, unknowns and NAs included."""
    trained: TrainedModel = request.getfixturevalue(trained_name)
    rows = hostile_rows(penguins)
    design = DesignMatrix.from_pipeline(trained.pipeline)
    preprocess = trained.pipeline.named_steps["preprocess"]
    vectorised = prepare(rows, trained.schema)
    per_row = prepare_small(instances_of(rows), trained.schema, allowed_extra={trained.options.target})
    kinds = {w["kind"] for w in vectorised.warnings()}
    assert {MISSING, UNKNOWN_CATEGORY} <= kinds

    for prepared in (vectorised, per_row):
        expected = preprocess.transform(prepared.frame)
        built = design.build(prepared)

        assert built.dtype == np.float64
        assert built.shape == expected.shape == (len(rows), design.width)
        assert np.array_equal(built, expected)


@pytest.mark.parametrize("trained_name", ["species_model", "species_logistic", "mass_ridge"])
def test_manifest_records_the_onnx_path_its_parity_and_the_file_checksum(
    request: pytest.FixtureRequest, trained_name: str, store: ModelStore, save_model, client: FlaskClient
) -> None:
    """A convertible model is saved with model.onnx, its sha256 and the holdout parity figures."""
    trained: TrainedModel = request.getfixturevalue(trained_name)
    version = save_model(trained)

    manifest = store.manifest(version)

    serving = manifest["serving"]
    assert serving["path"] == ONNX
    parity = serving["parity"]
    assert parity["rows"] == manifest["training_data"]["holdout_rows"] > 0
    assert parity["max_abs_difference"] <= PARITY_TOLERANCE
    assert parity["agrees"] is True
    if trained.task == "classification":
        assert parity["label_mismatches"] == 0
    onnx_bytes = (version_dir(store, version) / ONNX_FILE).read_bytes()
    assert serving["onnx_file"] == {
        "name": ONNX_FILE,
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "bytes": len(onnx_bytes),
    }
    assert store.load(version).serving_path == ONNX
    shown = client.get(f"/models/{version}").get_json()
    assert (shown["serving_path"], shown["serving_reason"]) == (ONNX, serving["reason"])


def test_model_skl2onnx_cannot_convert_is_served_by_scikit_learn(
    species_boosting: TrainedModel, store: ModelStore, save_model, client: FlaskClient, penguins: pd.DataFrame
) -> None:
    """No model.onnx, a reason naming skl2onnx, and POST /predict answers exactly as predict_proba."""
    version = save_model(species_boosting)
    features = penguins[species_boosting.schema.names]

    serving = store.manifest(version)["serving"]
    assert serving["path"] == SKLEARN
    assert "skl2onnx" in serving["reason"]
    assert "onnx_file" not in serving
    assert not (version_dir(store, version) / ONNX_FILE).exists()
    assert store.load(version).serving_path == SKLEARN

    response = client.post("/predict", json={"instances": instances_of(features), "model_version": version})

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    pipeline = species_boosting.pipeline
    classes = list(pipeline.classes_)
    np.testing.assert_array_equal(body["predictions"], pipeline.predict(features))
    assert np.array_equal(classes_in(body, classes), pipeline.predict_proba(features))
    shown = client.get(f"/models/{version}").get_json()
    assert (shown["serving_path"], shown["serving_reason"]) == (SKLEARN, serving["reason"])


@pytest.mark.parametrize("damage", ["changed", "deleted"])
def test_damaged_onnx_file_is_refused_at_load_and_by_predict(
    damage: str,
    species_model: TrainedModel,
    store: ModelStore,
    save_model,
    client: FlaskClient,
    penguins: pd.DataFrame,
    problem_of,
) -> None:
    """model.onnx that no longer matches its manifest fails the load, and POST /predict answers 409."""
    version = save_model(species_model, activate=False)
    path = version_dir(store, version) / ONNX_FILE
    if damage == "changed":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()

    with pytest.raises(ModelIntegrityError, match="ONNX file"):
        store.load(version)

    rows = instances_of(penguins.head(2)[species_model.schema.names])
    body = problem_of(client.post("/predict", json={"instances": rows, "model_version": version}), 409)
    assert body["type"] == "urn:predictq:problem:model-integrity-error"
    assert body["title"] == "Model integrity check failed"
    assert version in body["detail"]
    assert "ONNX file" in body["detail"]


def test_engine_uses_onnx_up_to_its_row_limit_and_scikit_learn_above(
    species_model: TrainedModel, penguins: pd.DataFrame
) -> None:
    """With onnx_max_rows 2, one row goes through onnxruntime and five through scikit-learn, with one answer."""
    plan = species_model.serving
    assert plan.info["path"] == ONNX
    engine = engine_for(species_model.pipeline, True, {**plan.info, "onnx_max_rows": 2}, plan.onnx_bytes)
    always_onnx = engine_for(species_model.pipeline, True, {**plan.info, "onnx_max_rows": None}, plan.onnx_bytes)
    whole_pipeline = Engine(species_model.pipeline, True)

    assert engine.path == ONNX
    assert [engine.uses_onnx(rows) for rows in (1, 2, 3, 5)] == [True, True, False, False]
    assert always_onnx.uses_onnx(5)
    for rows, expected_tolerance in ((1, TIE_TOLERANCE), (5, 0.0)):
        prepared = prepare(penguins.iloc[::50].head(rows), species_model.schema)
        scored, tolerance = engine.score(prepared)
        assert tolerance == expected_tolerance  # the tie tolerance says which scorer answered
        for other in (always_onnx, whole_pipeline):
            reference, reference_tolerance = other.score(prepared)
            assert scored.shape == reference.shape == (rows, 3)
            np.testing.assert_array_equal(labels_from(scored, tolerance), labels_from(reference, reference_tolerance))
            np.testing.assert_allclose(scored, reference, rtol=0, atol=PARITY_TOLERANCE)


def save_as_before_the_compiled_path(store: ModelStore, version: str, trained: TrainedModel) -> None:
    """Rewrite a saved version as one from before: no serving record, no ONNX file, no coercion step."""
    directory = version_dir(store, version)
    buffer = io.BytesIO()
    joblib.dump(after_coercion(trained.pipeline), buffer)
    model_bytes = buffer.getvalue()
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    del manifest["serving"]
    manifest["model_file"] = {"name": MODEL_FILE, "sha256": hashlib.sha256(model_bytes).hexdigest()}
    manifest["model_file"]["bytes"] = len(model_bytes)
    (directory / ONNX_FILE).unlink()
    (directory / MODEL_FILE).write_bytes(model_bytes)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_version_saved_before_the_compiled_path_still_loads_and_serves(
    species_model: TrainedModel, store: ModelStore, save_model, client: FlaskClient, penguins: pd.DataFrame
) -> None:
    """A manifest without "serving" and a pipeline without coercion are scored by scikit-learn, as before."""
    version = save_model(species_model)
    save_as_before_the_compiled_path(store, version, species_model)
    legacy = after_coercion(species_model.pipeline)
    assert legacy.steps[0][0] != COERCE_STEP

    loaded = store.load(version)
    assert loaded.serving_path == SKLEARN
    assert loaded.engine.design is None
    assert loaded.pipeline.steps[0][0] != COERCE_STEP

    features = penguins[species_model.schema.names]
    response = client.post("/predict", json={"instances": instances_of(features), "model_version": version})

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    coerced = prepare(features, species_model.schema).frame
    np.testing.assert_array_equal(body["predictions"], legacy.predict(coerced))
    np.testing.assert_array_equal(classes_in(body, list(legacy.classes_)), legacy.predict_proba(coerced))
    shown = client.get(f"/models/{version}").get_json()
    assert shown["serving_path"] == SKLEARN
    assert "before the compiled path" in shown["serving_reason"]
    (summary,) = client.get("/models").get_json()["models"]
    assert summary["serving_path"] == SKLEARN


def test_labels_from_breaks_near_ties_towards_the_first_class_only_with_a_tolerance() -> None:
    """Within the tie tolerance the first of the best classes wins; without one it is argmax."""
    probabilities = np.array(
        [
            [0.49999997, 0.50000003],
            [0.4, 0.6],
            [0.7, 0.3],
        ]
    )
    three_classes = np.array([[0.2, 0.3999999, 0.4000001]])

    np.testing.assert_array_equal(labels_from(probabilities, TIE_TOLERANCE), [0, 1, 0])
    np.testing.assert_array_equal(labels_from(probabilities), [1, 1, 0])
    np.testing.assert_array_equal(labels_from(probabilities), np.argmax(probabilities, axis=1))
    np.testing.assert_array_equal(labels_from(three_classes, TIE_TOLERANCE), [1])
    np.testing.assert_array_equal(labels_from(three_classes), [2])

"""The saved model.joblib stands alone: loaded by itself, it answers raw CSV rows as the service does."""

from __future__ import annotations

import csv
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient

from shared.compiled import PARITY_TOLERANCE
from shared.features import after_coercion
from shared.inputs import prepare
from shared.settings import Settings
from shared.store import MODEL_FILE
from shared.training import TrainedModel, TrainingOptions, train

# Cells blanked in the rows written to CSV: (row position, column). Numeric and categorical
# features go missing, alone and together, and so does a category pandas reads as a number.
BLANKED = [
    (0, "bill_length_mm"),
    (1, "island"),
    (2, "sex"),
    (4, "bill_depth_mm"),
    (4, "sex"),
    (5, "flipper_length_mm"),
    (6, "year"),
    (7, "species"),
    (7, "body_mass_g"),
]
OUT_OF_RANGE_ROW = 8
OUT_OF_RANGE_FLIPPER_MM = 400


@pytest.fixture(scope="module")
def clipping_ridge(penguins_table: pd.DataFrame) -> TrainedModel:
    """A linear regressor trained to clip out-of-range values, with the year read as a category."""
    options = TrainingOptions(target="body_mass_g", estimator="ridge", out_of_range_policy="clip", categorical=["year"])
    return train(penguins_table, options)


def write_csv(path: Path, rows: pd.DataFrame) -> Path:
    """``rows`` with the cells of :data:`BLANKED` left empty and one flipper far above training's."""
    rows = rows.reset_index(drop=True).astype(object)  # integers stay "2007", not "2007.0"
    for position, column in BLANKED:
        rows.loc[position, column] = None
    rows.loc[OUT_OF_RANGE_ROW, "flipper_length_mm"] = OUT_OF_RANGE_FLIPPER_MM
    rows.to_csv(path, index=False)
    return path


def instances_from_csv(path: Path) -> list[dict]:
    """The CSV's rows as a JSON client would send them: the text of each cell, null when empty."""
    with open(path, newline="") as handle:
        return [{name: text or None for name, text in row.items()} for row in csv.DictReader(handle)]


def standalone_model(settings: Settings, version: str):
    """The version's pipeline, loaded by joblib alone: no store, no manifest, no service code."""
    return joblib.load(settings.data_dir / "models" / version / MODEL_FILE)


def service_answer(client: FlaskClient, version: str, instances: list[dict]) -> dict:
    response = client.post("/predict", json={"instances": instances, "model_version": version})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("trained_name", ["species_model", "mass_model", "clipping_ridge"])
@pytest.mark.parametrize("row_count", [12, 344], ids=["per-row path", "vectorised path"])
def test_standalone_pipeline_answers_raw_csv_rows_as_the_service_does(
    request: pytest.FixtureRequest,
    trained_name: str,
    row_count: int,
    save_model,
    settings: Settings,
    client: FlaskClient,
    penguins: pd.DataFrame,
    tmp_path: Path,
) -> None:
    """joblib.load(model.joblib) on pd.read_csv rows with missing values gives POST /predict's answer."""
    trained: TrainedModel = request.getfixturevalue(trained_name)
    version = save_model(trained)
    rows = penguins.iloc[:: len(penguins) // row_count][:row_count]
    path = write_csv(tmp_path / "rows.csv", rows)
    frame = pd.read_csv(path)
    assert frame[trained.schema.numeric].isna().any().any()
    assert frame[trained.schema.categorical].isna().any().any()

    pipeline = standalone_model(settings, version)
    body = service_answer(client, version, instances_from_csv(path))

    assert len(body["predictions"]) == row_count
    if trained.task == "classification":
        classes = list(pipeline.classes_)
        np.testing.assert_array_equal(body["predictions"], pipeline.predict(frame))
        served = np.array([[row[c] for c in classes] for row in body["probabilities"]])
        np.testing.assert_allclose(served, pipeline.predict_proba(frame), rtol=0, atol=PARITY_TOLERANCE)
    else:
        assert body["predictions"] == pytest.approx(list(pipeline.predict(frame)), rel=PARITY_TOLERANCE)


def test_the_year_pandas_reads_as_a_number_is_the_category_the_model_learned(clipping_ridge: TrainedModel) -> None:
    """The clipping model's schema has a category written as digits, so the CSV case above covers it."""
    year = clipping_ridge.schema["year"]

    assert year.kind == "categorical"
    assert set(year.levels) == {"2007", "2008", "2009"}


def test_standalone_pipeline_clips_as_its_training_options_said(
    clipping_ridge: TrainedModel, save_model, settings: Settings, penguins: pd.DataFrame, tmp_path: Path
) -> None:
    """A model trained with out_of_range_policy "clip" clips in its own coercion step, without the service."""
    version = save_model(clipping_ridge)
    frame = pd.read_csv(write_csv(tmp_path / "rows.csv", penguins.iloc[::29]))
    at_max = frame.copy()
    at_max.loc[OUT_OF_RANGE_ROW, "flipper_length_mm"] = clipping_ridge.schema["flipper_length_mm"].training_max
    pipeline = standalone_model(settings, version)

    predicted = pipeline.predict(frame)[OUT_OF_RANGE_ROW]

    assert predicted == pytest.approx(pipeline.predict(at_max)[OUT_OF_RANGE_ROW], rel=1e-12)
    unclipped = after_coercion(pipeline).predict(prepare(frame, clipping_ridge.schema, "warn").frame)
    assert predicted != pytest.approx(unclipped[OUT_OF_RANGE_ROW], rel=PARITY_TOLERANCE)


@pytest.mark.parametrize("trained_name", ["species_model", "mass_model"])
def test_standalone_pipeline_names_the_row_and_feature_it_cannot_coerce(
    request: pytest.FixtureRequest,
    trained_name: str,
    save_model,
    settings: Settings,
    penguins: pd.DataFrame,
    tmp_path: Path,
) -> None:
    """Text in a numeric column makes the loaded pipeline raise ValueError saying where it is."""
    trained: TrainedModel = request.getfixturevalue(trained_name)
    version = save_model(trained)
    rows = penguins.head(4).astype(object)
    rows.loc[2, "bill_length_mm"] = "abc"
    rows.to_csv(tmp_path / "rows.csv", index=False)
    frame = pd.read_csv(tmp_path / "rows.csv")
    pipeline = standalone_model(settings, version)
    method = pipeline.predict_proba if trained.task == "classification" else pipeline.predict

    with pytest.raises(ValueError, match=r"row 2, field bill_length_mm: expected a number, got 'abc'"):
        method(frame)

"""Schema inference: which columns become numeric or categorical features, which are ignored."""

from __future__ import annotations

import pandas as pd
import pytest

from shared.errors import TrainingError
from shared.schema import IDENTIFIER_MIN_UNIQUE, FeatureSchema, infer_schema


def kinds(schema: FeatureSchema) -> dict[str, tuple[str, str]]:
    return {f.name: (f.kind, f.value_type) for f in schema.features}


def test_penguins_columns_get_their_natural_kinds(penguins: pd.DataFrame) -> None:
    """Measurements are numeric (integral ones typed integer despite gaps), text is categorical."""
    schema = infer_schema(penguins, "species")

    assert kinds(schema) == {
        "island": ("categorical", "string"),
        "bill_length_mm": ("numeric", "float"),
        "bill_depth_mm": ("numeric", "float"),
        "flipper_length_mm": ("numeric", "integer"),
        "body_mass_g": ("numeric", "integer"),
        "sex": ("categorical", "string"),
        "year": ("numeric", "integer"),
    }
    assert schema.ignored == ()
    assert "species" not in schema


def test_identifier_like_text_is_ignored() -> None:
    """A text column with (nearly) one value per row is an identifier, not a category."""
    rows = 2 * IDENTIFIER_MIN_UNIQUE + 20
    frame = pd.DataFrame(
        {
            "name": [f"penguin-{i}" for i in range(rows)],
            "colour": ["black", "white"] * (rows // 2),
            "mass": range(rows),
            "label": ["a", "b"] * (rows // 2),
        }
    )

    schema = infer_schema(frame, "label")

    assert schema.ignored == ("name",)
    assert kinds(schema) == {"colour": ("categorical", "string"), "mass": ("numeric", "integer")}


def test_few_distinct_texts_stay_categorical_even_when_all_differ() -> None:
    """Below the minimum number of distinct values a unique-per-row text column is still a category."""
    frame = pd.DataFrame({"code": [f"c{i}" for i in range(20)], "label": [0, 1] * 10})

    assert kinds(infer_schema(frame, "label")) == {"code": ("categorical", "string")}


def test_empty_datetime_and_boolean_columns() -> None:
    """All-missing and datetime columns are ignored; booleans are categorical."""
    frame = pd.DataFrame(
        {
            "empty": [None] * 12,
            "seen": pd.date_range("2024-01-01", periods=12),
            "tagged": [True, False] * 6,
            "x": [float(i) + 0.5 for i in range(12)],
            "label": ["a", "b"] * 6,
        }
    )

    schema = infer_schema(frame, "label")

    assert set(schema.ignored) == {"empty", "seen"}
    assert kinds(schema) == {"tagged": ("categorical", "boolean"), "x": ("numeric", "float")}


def test_overrides_change_the_inferred_kind(penguins: pd.DataFrame) -> None:
    """numeric/categorical/ignore overrides win over inference, numbers-as-text included."""
    penguins["year"] = penguins["year"].astype(str)  # "2007": text that parses as numbers

    schema = infer_schema(
        penguins, "species", numeric=["year"], categorical=["flipper_length_mm"], ignore=["island", "sex"]
    )

    assert schema["year"].kind == "numeric"
    assert schema["year"].value_type == "integer"
    assert schema["flipper_length_mm"].kind == "categorical"
    assert set(schema.ignored) == {"island", "sex"}
    assert "island" not in schema


def test_numeric_override_on_text_is_refused(penguins: pd.DataFrame) -> None:
    """Declaring a text column numeric fails training, naming the column."""
    with pytest.raises(TrainingError, match="'island' was declared numeric"):
        infer_schema(penguins, "species", numeric=["island"])


def test_override_naming_an_absent_column_is_refused(penguins: pd.DataFrame) -> None:
    """A typo in an override is an error, not a silent no-op."""
    with pytest.raises(TrainingError, match=r"not in the data.*'wingspan'"):
        infer_schema(penguins, "species", ignore=["wingspan"])


def test_absent_target_and_no_features_are_refused(penguins: pd.DataFrame) -> None:
    """Training needs the target column and at least one usable feature."""
    with pytest.raises(TrainingError, match="Target column 'beak'"):
        infer_schema(penguins, "beak")
    others = [c for c in penguins.columns if c != "species"]
    with pytest.raises(TrainingError, match="No usable feature columns"):
        infer_schema(penguins, "species", ignore=others)


def test_schema_round_trips_through_its_dict(species_model) -> None:
    """A schema with statistics survives to_dict/from_dict (the manifest format) unchanged."""
    schema = species_model.schema

    assert FeatureSchema.from_dict(schema.to_dict()) == schema
    assert schema["bill_length_mm"].training_min < schema["bill_length_mm"].training_max
    assert schema["island"].levels == {"Biscoe", "Dream", "Torgersen"}

"""Coercing request rows to the training frame, and the out-of-range / unseen / missing reports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from shared.errors import BadRequest, InvalidInput
from shared.inputs import (
    ABOVE_MAX,
    BELOW_MIN,
    MAX_REPORTED_ERRORS,
    MISSING,
    MISSING_CATEGORY,
    UNKNOWN_CATEGORY,
    PreparedInput,
    check_columns,
    instances_to_frame,
    prepare,
)
from shared.schema import FeatureSchema
from shared.training import TrainedModel


def penguin(**changes: object) -> dict:
    """A valid row for a species model, well inside every training range."""
    row = {
        "island": "Biscoe",
        "bill_length_mm": 45.0,
        "bill_depth_mm": 15.0,
        "flipper_length_mm": 215,
        "body_mass_g": 5000,
        "sex": "female",
        "year": 2008,
    }
    return {**row, **changes}


@pytest.fixture
def schema(species_model: TrainedModel) -> FeatureSchema:
    return species_model.schema


def prepare_rows(rows: list[dict], schema: FeatureSchema, policy: str = "warn") -> PreparedInput:
    return prepare(instances_to_frame(rows, schema), schema, policy)


def only_error(exc: pytest.ExceptionInfo[InvalidInput]) -> dict:
    assert len(exc.value.errors) == 1, exc.value.errors
    return exc.value.errors[0].to_dict()


# Out-of-range policies


def test_warn_reports_values_beyond_the_range_and_predicts_them_as_sent(schema: FeatureSchema) -> None:
    """warn: above max / below min are reported with the training bounds; the frame keeps the value."""
    flipper = schema["flipper_length_mm"]
    bill = schema["bill_depth_mm"]
    high, low = flipper.training_max + 50, bill.training_min - 5

    prepared = prepare_rows([penguin(), penguin(flipper_length_mm=high, bill_depth_mm=low)], schema, "warn")

    assert prepared.frame.loc[1, "flipper_length_mm"] == high
    assert prepared.frame.loc[1, "bill_depth_mm"] == low
    warnings = prepared.warnings()
    assert [(w["row"], w["feature"], w["kind"], w["value"]) for w in warnings] == [
        (1, "bill_depth_mm", BELOW_MIN, low),
        (1, "flipper_length_mm", ABOVE_MAX, high),
    ]
    assert warnings[1]["training_min"] == flipper.training_min
    assert warnings[1]["training_max"] == flipper.training_max
    assert "predicted as sent" in warnings[1]["detail"]


def test_warn_changes_nothing_the_pipeline_sees(species_model: TrainedModel, schema: FeatureSchema) -> None:
    """warn: the prepared row scores exactly like the raw numbers fed to the pipeline."""
    high = schema["body_mass_g"].training_max * 3
    prepared = prepare_rows([penguin(body_mass_g=high)], schema, "warn")
    raw = pd.DataFrame([penguin(body_mass_g=high)], dtype=object)[schema.names]
    raw = raw.astype({name: "float64" for name in schema.numeric})

    np.testing.assert_array_equal(
        species_model.pipeline.predict_proba(prepared.frame), species_model.pipeline.predict_proba(raw)
    )


def test_clip_clamps_into_the_training_range_before_the_pipeline(schema: FeatureSchema) -> None:
    """clip: the frame holds the nearest bound; the warning reports the value as sent and the clipping."""
    flipper = schema["flipper_length_mm"]
    bill = schema["bill_length_mm"]
    high, low = flipper.training_max + 50, bill.training_min - 10

    prepared = prepare_rows([penguin(flipper_length_mm=high), penguin(bill_length_mm=low)], schema, "clip")

    assert prepared.frame.loc[0, "flipper_length_mm"] == flipper.training_max
    assert prepared.frame.loc[1, "bill_length_mm"] == bill.training_min
    assert prepared.frame.loc[1, "flipper_length_mm"] == 215  # in-range values untouched
    first, second = prepared.warnings()
    assert (first["row"], first["feature"], first["kind"], first["value"]) == (0, "flipper_length_mm", ABOVE_MAX, high)
    assert f"clipped to {flipper.training_max}" in first["detail"]
    assert (second["row"], second["kind"], second["value"]) == (1, BELOW_MIN, low)
    assert f"clipped to {bill.training_min}" in second["detail"]


def test_reject_names_row_field_value_and_range(schema: FeatureSchema) -> None:
    """reject: an out-of-range value is an InvalidInput naming row, field, value and the range."""
    flipper = schema["flipper_length_mm"]
    high = flipper.training_max + 50

    with pytest.raises(InvalidInput) as exc:
        prepare_rows([penguin(), penguin(), penguin(flipper_length_mm=high)], schema, "reject")

    error = only_error(exc)
    assert error["row"] == 2
    assert error["field"] == "flipper_length_mm"
    assert str(high) in error["message"]
    assert f"[{flipper.training_min}, {flipper.training_max}]" in error["message"]


def test_reject_accepts_values_on_the_bounds(schema: FeatureSchema) -> None:
    """reject: the training min and max themselves are in range."""
    flipper = schema["flipper_length_mm"]

    prepared = prepare_rows(
        [penguin(flipper_length_mm=flipper.training_min), penguin(flipper_length_mm=flipper.training_max)],
        schema,
        "reject",
    )

    assert prepared.warnings() == []


# Categories and missing values


def test_unseen_category_is_reported_as_unknown(schema: FeatureSchema) -> None:
    """A level training never saw is accepted and reported as unknown_category."""
    prepared = prepare_rows([penguin(island="Atlantis")], schema)

    (warning,) = prepared.warnings()
    assert (warning["row"], warning["feature"], warning["kind"], warning["value"]) == (
        0,
        "island",
        UNKNOWN_CATEGORY,
        "Atlantis",
    )
    assert "not seen in training" in warning["detail"]


def test_unseen_category_encodes_as_all_levels_off(species_model: TrainedModel, schema: FeatureSchema) -> None:
    """The one-hot encoding of an unseen island is all zeros rather than a failure."""
    prepared = prepare_rows([penguin(island="Atlantis")], schema)

    encoder = species_model.pipeline.named_steps["preprocess"].named_transformers_["cat"].named_steps["onehot"]
    encoded = encoder.transform(prepared.frame[["island", "sex"]].to_numpy())
    island_columns = len(encoder.categories_[0])
    assert encoded[0, :island_columns].sum() == 0


def test_null_numeric_is_imputed_with_the_training_median_and_reported(
    species_model: TrainedModel, schema: FeatureSchema
) -> None:
    """A null number is reported as missing and transforms exactly like the training median."""
    median = schema["bill_length_mm"].stats["quantiles"]["p50"]
    preprocess = species_model.pipeline.named_steps["preprocess"]

    prepared = prepare_rows([penguin(bill_length_mm=None), penguin(bill_length_mm=median)], schema)

    transformed = preprocess.transform(prepared.frame)
    np.testing.assert_allclose(transformed[0], transformed[1])
    (warning,) = prepared.warnings()
    assert (warning["row"], warning["feature"], warning["kind"], warning["value"]) == (
        0,
        "bill_length_mm",
        MISSING,
        None,
    )
    assert str(median) in warning["detail"]


def test_null_category_is_imputed_with_the_most_frequent_level(
    species_model: TrainedModel, schema: FeatureSchema
) -> None:
    """A null (or blank) category is reported as missing and encodes like the most frequent level."""
    levels = schema["island"].stats["levels"]
    most_frequent = max(levels, key=levels.get)
    preprocess = species_model.pipeline.named_steps["preprocess"]

    prepared = prepare_rows([penguin(island=None), penguin(island="  "), penguin(island=most_frequent)], schema)

    assert prepared.frame.loc[0, "island"] == MISSING_CATEGORY
    transformed = preprocess.transform(prepared.frame)
    np.testing.assert_allclose(transformed[0], transformed[2])
    np.testing.assert_allclose(transformed[1], transformed[2])
    assert [(w["row"], w["feature"], w["kind"]) for w in prepared.warnings()] == [
        (0, "island", MISSING),
        (1, "island", MISSING),
    ]


def test_integer_columns_accept_null(schema: FeatureSchema) -> None:
    """Integer-typed features (with or without gaps in training) take null as a missing value."""
    assert schema["flipper_length_mm"].value_type == "integer"
    assert schema["year"].value_type == "integer"

    prepared = prepare_rows([penguin(flipper_length_mm=None, year=None)], schema)

    assert math.isnan(prepared.frame.loc[0, "flipper_length_mm"])
    assert math.isnan(prepared.frame.loc[0, "year"])
    assert {(w["feature"], w["kind"]) for w in prepared.warnings()} == {
        ("flipper_length_mm", MISSING),
        ("year", MISSING),
    }


# Coercion of numbers


def test_number_sent_as_text_is_accepted_when_it_parses(schema: FeatureSchema) -> None:
    """ "45.5", " 215 " and "5e3" are numbers; the frame holds floats and nothing is reported."""
    prepared = prepare_rows([penguin(bill_length_mm="45.5", flipper_length_mm=" 215 ", body_mass_g="5e3")], schema)

    assert prepared.frame.loc[0, "bill_length_mm"] == 45.5
    assert prepared.frame.loc[0, "flipper_length_mm"] == 215.0
    assert prepared.frame.loc[0, "body_mass_g"] == 5000.0
    assert prepared.frame["bill_length_mm"].dtype == np.float64
    assert prepared.warnings() == []


def test_number_sent_as_unparseable_text_is_invalid(schema: FeatureSchema) -> None:
    """Text that is not a number in a numeric column is an InvalidInput naming row and field."""
    with pytest.raises(InvalidInput) as exc:
        prepare_rows([penguin(), penguin(bill_length_mm="forty")], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (1, "bill_length_mm")
    assert "'forty'" in error["message"]


@pytest.mark.parametrize("value", [True, False])
def test_boolean_in_numeric_column_is_refused(schema: FeatureSchema, value: bool) -> None:
    """true/false are not silently read as 1/0 in a numeric column."""
    with pytest.raises(InvalidInput) as exc:
        prepare_rows([penguin(year=value)], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (0, "year")
    assert "boolean" in error["message"]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_json_number_is_refused(schema: FeatureSchema, value: float) -> None:
    """Infinity and NaN (which Python's JSON parser accepts) are refused at the row, not imputed."""
    with pytest.raises(InvalidInput) as exc:
        instances_to_frame([penguin(bill_depth_mm=value)], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (0, "bill_depth_mm")
    assert "finite" in error["message"]


@pytest.mark.parametrize("value", ["inf", "-Infinity", "nan", "1e999"])
def test_non_finite_number_text_is_refused(schema: FeatureSchema, value: str) -> None:
    """Text that parses to a non-finite float is refused, not treated as a number or missing."""
    with pytest.raises(InvalidInput) as exc:
        prepare_rows([penguin(body_mass_g=value)], schema)

    assert "finite" in only_error(exc)["message"]


@pytest.mark.parametrize("column", [[4000.0, math.inf], [4000.0, -math.inf], ["4000", math.inf]], ids=str)
def test_non_finite_number_in_a_table_is_refused(schema: FeatureSchema, column: list) -> None:
    """Infinite values in a frame (a CSV batch), float or mixed column, are refused with their row."""
    frame = pd.DataFrame([penguin(), penguin()])
    frame["body_mass_g"] = pd.Series(column, dtype="float64" if all(isinstance(v, float) for v in column) else object)

    with pytest.raises(InvalidInput) as exc:
        prepare(frame, schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (1, "body_mass_g")
    assert "finite" in error["message"]


def test_integer_too_large_for_a_float_is_refused(schema: FeatureSchema) -> None:
    """A JSON integer beyond float range is an InvalidInput, not an OverflowError."""
    with pytest.raises(InvalidInput) as exc:
        prepare_rows([penguin(body_mass_g=10**400)], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (0, "body_mass_g")


@pytest.mark.parametrize("value", [[5000], {"g": 5000}])
def test_containers_are_refused_in_any_column(schema: FeatureSchema, value: object) -> None:
    """Lists and objects are neither numbers nor categories."""
    with pytest.raises(InvalidInput) as exc:
        prepare_rows([penguin(body_mass_g=value, sex=value)], schema)

    assert {(e.row, e.field) for e in exc.value.errors} == {(0, "body_mass_g"), (0, "sex")}


# Shape of the rows


def test_unknown_extra_feature_is_refused(schema: FeatureSchema) -> None:
    """A field the model does not take is an error naming the row and field."""
    with pytest.raises(InvalidInput) as exc:
        instances_to_frame([penguin(), penguin(wingspan_cm=80)], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (1, "wingspan_cm")
    assert "unknown feature" in error["message"]


def test_allowed_extra_fields_are_accepted_and_dropped(schema: FeatureSchema) -> None:
    """The target column may be sent along (rows copied from the training table); it is not a feature."""
    frame = instances_to_frame([penguin(species="Gentoo")], schema, allowed_extra={"species"})

    assert list(frame.columns) == schema.names


def test_missing_required_feature_is_refused(schema: FeatureSchema) -> None:
    """Leaving a feature out (rather than sending null) is an error naming row and field."""
    row = penguin()
    del row["sex"]

    with pytest.raises(InvalidInput) as exc:
        instances_to_frame([penguin(), row], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (1, "sex")
    assert "send null" in error["message"]


def test_row_that_is_not_an_object_is_refused(schema: FeatureSchema) -> None:
    """Each instance must be a JSON object; the error names the row."""
    with pytest.raises(InvalidInput) as exc:
        instances_to_frame([penguin(), [1, 2, 3]], schema)

    error = only_error(exc)
    assert (error["row"], error["field"]) == (1, None)


@pytest.mark.parametrize("instances", [[], {}, "rows", None])
def test_instances_must_be_a_non_empty_list(schema: FeatureSchema, instances: object) -> None:
    """Anything but a non-empty list is a BadRequest (400), not a row error."""
    with pytest.raises(BadRequest, match="non-empty list"):
        instances_to_frame(instances, schema)


def test_every_fault_is_reported_in_row_order(schema: FeatureSchema) -> None:
    """Faults in several rows and columns come back together, sorted by row."""
    rows = [penguin(), penguin(year="soon"), penguin(bill_length_mm=True), penguin(year="later")]

    with pytest.raises(InvalidInput) as exc:
        prepare_rows(rows, schema)

    assert [(e.row, e.field) for e in exc.value.errors] == [(1, "year"), (2, "bill_length_mm"), (3, "year")]
    assert exc.value.detail.startswith("3 value(s)")


def test_error_list_is_capped(schema: FeatureSchema) -> None:
    """Past MAX_REPORTED_ERRORS faults the list is cut and the detail gives the true count."""
    rows = [penguin(year="?")] * (MAX_REPORTED_ERRORS + 5)

    with pytest.raises(InvalidInput) as exc:
        prepare_rows(rows, schema)

    assert len(exc.value.errors) == MAX_REPORTED_ERRORS
    assert exc.value.detail == f"{MAX_REPORTED_ERRORS + 5} value(s) do not fit the model's schema (first 100 listed)"


def test_row_offset_shifts_rows_in_errors_and_warnings(schema: FeatureSchema) -> None:
    """A chunk of a batch reports rows numbered in the whole batch."""
    prepared = prepare(pd.DataFrame([penguin(), penguin(island="Atlantis")]), schema, row_offset=100)
    assert [w["row"] for w in prepared.warnings()] == [101]

    with pytest.raises(InvalidInput) as exc:
        prepare(pd.DataFrame([penguin(year="?")]), schema, row_offset=100)
    assert only_error(exc)["row"] == 100


def test_table_lacking_a_feature_column_is_refused(schema: FeatureSchema) -> None:
    """A CSV without a feature column fails once for the column, not once per row."""
    with pytest.raises(InvalidInput) as exc:
        check_columns(["island", "sex"], schema)

    assert {e.field for e in exc.value.errors} == set(schema.numeric)
    assert all(e.row is None for e in exc.value.errors)


def test_quality_summary_counts_each_kind_per_feature(schema: FeatureSchema) -> None:
    """The batch summary counts warnings per feature and kind, omitting zeros."""
    high = schema["body_mass_g"].training_max + 1
    rows = [penguin(island="Atlantis"), penguin(island=None, body_mass_g=high), penguin(body_mass_g=high)]

    summary = prepare_rows(rows, schema).quality_summary()

    assert summary == {"island": {MISSING: 1, UNKNOWN_CATEGORY: 1}, "body_mass_g": {ABOVE_MAX: 2}}

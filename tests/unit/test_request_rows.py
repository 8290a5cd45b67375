"""The per-row path of small requests answers exactly as the vectorised path does.

Hypothesis feeds both the same random and hostile rows: values of every JSON type, numbers as
text, out-of-range and unseen values, missing and unknown keys, rows that are not objects.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared.serving as serving
from shared.engine import DesignMatrix
from shared.errors import PredictqError
from shared.inputs import instances_to_frame, prepare, prepare_rows
from shared.request_rows import prepare_small
from shared.traffic import TrafficMonitor
from shared.training import TrainedModel

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
CATEGORICAL = ["island", "sex"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([10**400, -(10**400), 2**63, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e4, max_value=1e4),
    st.sampled_from(["", "  ", "nan", "inf", "-Infinity", "1e999", " 42.5 ", "3", "3.0", "abc", "true"]),
    st.text(max_size=6),
)
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=1))


plausible_numbers = st.one_of(
    st.none(),
    st.floats(min_value=-50, max_value=7000),
    st.integers(min_value=1900, max_value=2100),
    st.sampled_from(["", " 42.5 ", "3", "2008"]),
)
plausible_levels = st.one_of(st.none(), st.sampled_from(["", " ", "Biscoe", "Dream", "Torgersen", "Atlantis", "male"]))


@st.composite
def rows(draw) -> dict | object:
    """Mostly plausible rows (so answers and warnings are reached), now and then a hostile one."""
    if draw(st.integers(0, 40)) == 0:
        return draw(st.one_of(scalars, st.lists(scalars, max_size=2)))  # not an object
    row = {}
    for name in [*NUMERIC, *CATEGORICAL]:
        if draw(st.integers(0, 30)) == 0:
            continue  # the feature left out
        hostile = draw(st.integers(0, 25)) == 0
        plausible = plausible_numbers if name in NUMERIC else plausible_levels
        row[name] = draw(values if hostile else plausible)
    if draw(st.integers(0, 25)) == 0:
        row[draw(st.sampled_from(["wingspan", "species", "", "0"]))] = draw(scalars)
    return row


def outcome(prepare_rows, design: DesignMatrix) -> tuple:
    """Everything a caller can see of a preparation: its error, or its values, warnings and matrix."""
    try:
        prepared = prepare_rows()
    except PredictqError as exc:
        return ("error", type(exc).__name__, exc.detail, [e.to_dict() for e in exc.errors])
    columns = {name: np.asarray(values).tolist() for name, values in prepared.columns.items()}
    # NaN != NaN: compare the bytes of the float64 columns and of the design matrix.
    numeric = {name: np.asarray(prepared.columns[name], dtype=np.float64).tobytes() for name in NUMERIC}
    categorical = {name: columns[name] for name in CATEGORICAL}
    return (
        "ok",
        prepared.rows,
        numeric,
        categorical,
        prepared.warnings(),
        prepared.quality_summary(),
        design.build(prepared).tobytes(),
    )


@settings(max_examples=300, deadline=None)
@given(instances=st.lists(rows(), min_size=1, max_size=8), policy=st.sampled_from(["warn", "clip", "reject"]))
def test_small_path_equals_vectorised_path(species_model: TrainedModel, instances: list, policy: str) -> None:
    """Same errors (type, detail, every fault), or the same values, warnings and design matrix.

    Three ways in: value by value (small requests), JSON rows column by column (larger
    requests), and through a frame (batch jobs).
    """
    schema = species_model.schema
    design = DesignMatrix.from_pipeline(species_model.pipeline)
    extra = {"species"}

    small = outcome(lambda: prepare_small(instances, schema, policy, allowed_extra=extra), design)
    vectorised = outcome(
        lambda: prepare(instances_to_frame(instances, schema, allowed_extra=extra), schema, policy), design
    )

    columns = outcome(lambda: prepare_rows(instances, schema, policy, allowed_extra=extra), design)

    assert small == vectorised
    assert columns == vectorised


def test_the_generator_reaches_both_outcomes(species_model: TrainedModel) -> None:
    """The property above is not vacuous: its rows yield answers with warnings, and refusals."""
    found = set()
    design = DesignMatrix.from_pipeline(species_model.pipeline)

    @settings(max_examples=200, deadline=None, database=None)
    @given(instances=st.lists(rows(), min_size=1, max_size=3))
    def collect(instances: list) -> None:
        result = outcome(lambda: prepare_small(instances, species_model.schema, allowed_extra={"species"}), design)
        found.add(result[0] if result[0] == "error" else ("ok", bool(result[4])))

    collect()
    assert {"error", ("ok", True)} <= found


@pytest.mark.parametrize("policy", ["warn", "clip", "reject"])
def test_http_answers_are_byte_for_byte_the_same(
    species_model: TrainedModel, save_model, client: FlaskClient, policy: str
) -> None:
    """POST /predict by either path: the same status and the same bytes, answers and problems alike."""
    save_model(species_model, policy=policy)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(instances=st.lists(rows(), min_size=1, max_size=5))
    def check(instances: list) -> None:
        small = client.post("/predict", json={"instances": instances})
        with mock.patch.object(serving, "SMALL_REQUEST_ROWS", 0):  # every request by the vectorised path
            vectorised = client.post("/predict", json={"instances": instances})
        assert small.status_code == vectorised.status_code
        assert small.status_code in (200, 400, 422)
        assert small.get_data() == vectorised.get_data()

    check()


def test_traffic_counts_equal_by_either_path(species_model: TrainedModel, save_model, store, tmp_path) -> None:
    """A small request's rows are counted for the model report as the vectorised path counts them."""
    model = store.load(save_model(species_model))
    edges = species_model.schema["flipper_length_mm"].stats["histogram"]["edges"]
    base = {"island": "Dream", "bill_length_mm": 40.0, "bill_depth_mm": 18.0, "body_mass_g": 3700, "sex": None}
    flippers = [edges[0], edges[-1], edges[3], edges[0] - 1, edges[-1] + 1, None, 200.5]
    instances = [
        {**base, "flipper_length_mm": f, "year": 2008, "island": i} for f, i in zip(flippers, "ABCDEFG", strict=True)
    ]
    instances += [{**base, "flipper_length_mm": 190, "year": None}]
    small, vectorised = TrafficMonitor(tmp_path / "a", 3600), TrafficMonitor(tmp_path / "b", 3600)

    small.record(model, prepare_small(instances, model.schema))
    vectorised.record(model, prepare(instances_to_frame(instances, model.schema), model.schema))

    assert small._counts == vectorised._counts
    flipper = small._counts[model.version]["features"]["flipper_length_mm"]
    assert (flipper["below"], flipper["above"], flipper["missing"], sum(flipper["bins"])) == (1, 1, 1, 5)

"""Training: task inference, metrics per task, a deterministic split, and refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.errors import TrainingError
from shared.inputs import prepare
from shared.training import TrainedModel, TrainingOptions, infer_task, train

FAST_FOREST = {"n_estimators": 20}


def options(target: str, **changes: object) -> TrainingOptions:
    return TrainingOptions(target=target, **{"estimator": "random_forest", "params": FAST_FOREST, **changes})


def test_multiclass_metrics(species_model: TrainedModel) -> None:
    """A three-class model reports accuracy, macro F1 and log loss (no ROC AUC), on the holdout."""
    metrics = species_model.metrics

    assert species_model.task == "classification"
    assert set(metrics) == {"holdout_rows", "accuracy", "macro_f1", "log_loss"}
    assert metrics["holdout_rows"] == len(species_model.holdout_target) == 69  # 20% of 344
    # Species are easy to tell apart: far above the 44% of always guessing Adelie.
    assert 0.8 < metrics["accuracy"] <= 1.0
    assert 0.8 < metrics["macro_f1"] <= 1.0
    assert metrics["log_loss"] > 0.0


def test_binary_metrics_include_roc_auc(penguins: pd.DataFrame) -> None:
    """A two-class model also reports ROC AUC; rows without a target are dropped and counted."""
    trained = train(penguins, options("sex"))

    assert set(trained.metrics) == {"holdout_rows", "accuracy", "macro_f1", "log_loss", "roc_auc"}
    assert 0.5 < trained.metrics["roc_auc"] <= 1.0
    assert trained.dropped_rows == penguins["sex"].isna().sum() == 11


def test_regression_metrics(mass_model: TrainedModel) -> None:
    """A regressor reports RMSE, MAE and R² on the holdout."""
    metrics = mass_model.metrics

    assert mass_model.task == "regression"
    assert set(metrics) == {"holdout_rows", "rmse", "mae", "r2"}
    assert 0.0 < metrics["mae"] <= metrics["rmse"]
    assert 0.5 < metrics["r2"] <= 1.0
    assert mass_model.score == metrics["r2"]


def test_metrics_match_the_holdout_rows(mass_model: TrainedModel) -> None:
    """The recorded metrics are those of the pipeline on the rows it held out."""
    predicted = mass_model.pipeline.predict(prepare(mass_model.holdout_frame, mass_model.schema).frame)
    errors = predicted - mass_model.holdout_target.to_numpy()

    assert mass_model.metrics["mae"] == pytest.approx(np.abs(errors).mean())
    assert mass_model.metrics["rmse"] == pytest.approx(np.sqrt((errors**2).mean()))


def test_same_seed_gives_the_same_split_metrics_and_predictions(penguins: pd.DataFrame) -> None:
    """Training twice with one seed holds out the same rows and fits the same model."""
    first, second = train(penguins, options("species", seed=5)), train(penguins, options("species", seed=5))
    frame = prepare(penguins, first.schema).frame

    pd.testing.assert_frame_equal(first.holdout_frame, second.holdout_frame)
    assert first.metrics == second.metrics
    np.testing.assert_array_equal(first.pipeline.predict_proba(frame), second.pipeline.predict_proba(frame))


def test_another_seed_holds_out_other_rows(penguins: pd.DataFrame) -> None:
    """The seed drives the split: a different seed holds out a different set of rows."""
    first, second = train(penguins, options("species", seed=1)), train(penguins, options("species", seed=2))

    assert not first.holdout_frame.equals(second.holdout_frame)


def test_classification_split_is_stratified(species_model: TrainedModel, penguins: pd.DataFrame) -> None:
    """Each species is held out in proportion to its share of the table."""
    held = species_model.holdout_target.value_counts()
    total = penguins["species"].value_counts()

    for species, count in total.items():
        assert abs(held[species] - count * 0.2) <= 1


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "classification"),
        ([True, False, True], "classification"),
        ([1, 2, 3, 1], "classification"),
        ([1.0, 2.0, np.nan, 1.0], "classification"),
        (list(range(100)), "regression"),
        ([0.5, 1.5, 2.0], "regression"),
    ],
)
def test_task_is_inferred_from_the_target(values: list, task: str) -> None:
    """Text, booleans and integers with few values are classes; other numbers are regression."""
    assert infer_task(pd.Series(values)) == task


def test_explicit_task_overrides_inference(penguins: pd.DataFrame) -> None:
    """task='regression' fits a regressor to the integer year that would otherwise be read as classes."""
    trained = train(penguins, options("year", task="regression"))

    assert trained.task == "regression"
    assert infer_task(penguins["year"]) == "classification"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": "wingspan"}, "Target column 'wingspan' is not in the data"),
        ({"holdout_fraction": 1.0}, "holdout_fraction must be between 0 and 1"),
        ({"target": "island", "task": "regression"}, "regression needs numbers"),
        ({"estimator": "svm"}, "Unknown estimator"),
    ],
)
def test_unusable_options_are_training_errors(penguins: pd.DataFrame, change: dict, message: str) -> None:
    """Bad targets, fractions, tasks and estimators fail with a message a user can act on."""
    with pytest.raises(TrainingError, match=message):
        train(penguins, options(**{"target": "species", **change}))


def test_too_few_labelled_rows_and_single_class_are_refused(penguins: pd.DataFrame) -> None:
    """At least ten labelled rows and two classes are needed."""
    with pytest.raises(TrainingError, match="Only 9 rows"):
        train(penguins.head(9), options("species"))
    with pytest.raises(TrainingError, match="single class"):
        train(penguins[penguins["species"] == "Adelie"], options("species"))

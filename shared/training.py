"""Training: from a table and a target column to a fitted pipeline with holdout metrics."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from shared.compiled import ServingPlan, plan_serving
from shared.engine import gives_probabilities
from shared.errors import InvalidInput, TrainingError
from shared.estimators import Task, make_estimator
from shared.features import build_pipeline, coercion_policy
from shared.inputs import MISSING_CATEGORY, prepare
from shared.schema import FeatureSchema, compute_stats, infer_schema
from shared.values import to_json_value

# An integer target with at most this many distinct values is read as class labels.
MAX_CLASSES_FOR_INTEGER_TARGET = 20
MIN_TRAINING_ROWS = 10
# Holdout points kept in the manifest for the residual plot.
MAX_DIAGNOSTIC_POINTS = 2000
# The holdout score that decides whether a retrained model replaces the active one.
COMPARISON_METRIC: dict[Task, str] = {"classification": "macro_f1", "regression": "r2"}


@dataclass
class TrainingOptions:
    """Everything a training run is asked to do; recorded in the manifest."""

    target: str
    task: Task | None = None
    estimator: str | None = None
    params: dict = field(default_factory=dict)
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    ignore: list[str] | None = None
    holdout_fraction: float = 0.2
    seed: int = 42
    out_of_range_policy: str = "warn"
    allow_dotted_path: bool = False


@dataclass
class TrainedModel:
    """A fitted pipeline and what training learned and measured."""

    pipeline: Pipeline
    schema: FeatureSchema
    task: Task
    estimator_name: str
    metrics: dict
    options: TrainingOptions
    diagnostics: dict
    holdout_frame: pd.DataFrame  # raw rows, target included, so other models can be scored on them
    holdout_target: pd.Series
    training_rows: int
    dropped_rows: int
    serving: ServingPlan

    @property
    def score(self) -> float:
        return self.metrics[COMPARISON_METRIC[self.task]]


def infer_task(target: pd.Series) -> Task:
    """Classification for text, booleans and integers with few values; else regression."""
    if ptypes.is_bool_dtype(target) or not ptypes.is_numeric_dtype(target):
        return "classification"
    values = target.dropna()
    is_integral = ptypes.is_integer_dtype(target) or bool(np.all(np.mod(values, 1) == 0))
    if is_integral and values.nunique() <= MAX_CLASSES_FOR_INTEGER_TARGET:
        return "classification"
    return "regression"


def train(frame: pd.DataFrame, options: TrainingOptions) -> TrainedModel:
    """Fit preprocessing and estimator on a seeded split and score the holdout.

    Parameters
    ----------
    frame : DataFrame
        The training table, target column included.
    options : TrainingOptions

    Returns
    -------
    TrainedModel
        Raises :class:`TrainingError` with a message a user can act on.
    """
    if options.target not in frame.columns:
        raise TrainingError(f"Target column {options.target!r} is not in the data; columns are {list(frame.columns)}")
    if not 0.0 < options.holdout_fraction < 1.0:
        raise TrainingError("holdout_fraction must be between 0 and 1")
    labelled = frame[frame[options.target].notna()].reset_index(drop=True)
    dropped = len(frame) - len(labelled)
    if len(labelled) < MIN_TRAINING_ROWS:
        raise TrainingError(f"Only {len(labelled)} rows have a target value; at least {MIN_TRAINING_ROWS} are needed")
    target = labelled[options.target]
    task = options.task or infer_task(target)
    if task == "regression" and not ptypes.is_numeric_dtype(target):
        raise TrainingError(f"Target {options.target!r} is not numeric; regression needs numbers")
    if task == "classification" and target.nunique() < 2:
        raise TrainingError(f"Target {options.target!r} has a single class; classification needs two or more")

    schema = infer_schema(
        labelled, options.target, numeric=options.numeric, categorical=options.categorical, ignore=options.ignore
    )
    try:
        features = prepare(labelled, schema).frame
    except InvalidInput as exc:
        raise TrainingError(f"Training data does not fit its own schema: {exc.detail}", exc.errors) from exc

    train_idx, holdout_idx = _split(target, task, options)
    x_train, y_train = features.iloc[train_idx], target.iloc[train_idx]
    x_hold, y_hold = features.iloc[holdout_idx], target.iloc[holdout_idx]
    schema = schema.with_stats(compute_stats(x_train.reset_index(drop=True), schema, MISSING_CATEGORY))

    name, estimator = make_estimator(
        options.estimator, task, options.params, seed=options.seed, allow_dotted_path=options.allow_dotted_path
    )
    pipeline = build_pipeline(schema, estimator, options.out_of_range_policy)
    try:
        _fit_on_every_core(pipeline, x_train, y_train)
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"{name} failed to fit: {exc}") from exc
    # The holdout as the service would see it (coerced, clipped under "clip"), for the parity check.
    coerced_hold = prepare(labelled.iloc[holdout_idx], schema, coercion_policy(options.out_of_range_policy))
    probabilities = gives_probabilities(task, pipeline)
    return TrainedModel(
        pipeline=pipeline,
        schema=schema,
        task=task,
        estimator_name=name,
        metrics=evaluate(pipeline, task, x_hold, y_hold),
        diagnostics=diagnostics(pipeline, task, x_hold, y_hold),
        options=options,
        holdout_frame=labelled.iloc[holdout_idx].reset_index(drop=True),
        holdout_target=y_hold.reset_index(drop=True),
        training_rows=len(train_idx),
        dropped_rows=dropped,
        serving=plan_serving(pipeline, probabilities, coerced_hold),
    )


def _fit_on_every_core(pipeline: Pipeline, features: pd.DataFrame, target: pd.Series) -> None:
    """Fit; an estimator left at ``n_jobs=None`` fits on every core, then scores on one.

    Scoring stays single-threaded: each API and worker process already has a core. The fitted
    model is the same either way (scikit-learn draws every tree's seed before dispatching).
    """
    estimator = pipeline[-1]
    # Ensembles fit their members in parallel; elsewhere n_jobs is unused (or deprecated).
    is_ensemble = type(estimator).__module__.startswith("sklearn.ensemble")
    parallel = is_ensemble and estimator.get_params().get("n_jobs", False) is None
    if parallel:
        estimator.set_params(n_jobs=-1)
    try:
        pipeline.fit(features, target)
    finally:
        if parallel:
            estimator.set_params(n_jobs=None)


def _split(target: pd.Series, task: Task, options: TrainingOptions) -> tuple[np.ndarray, np.ndarray]:
    indices = np.arange(len(target))
    stratify = None
    if task == "classification" and target.value_counts().min() >= 2:
        stratify = target
    try:
        return train_test_split(
            indices, test_size=options.holdout_fraction, random_state=options.seed, stratify=stratify
        )
    except ValueError:
        # Too few rows per class for a stratified holdout of this size.
        return train_test_split(indices, test_size=options.holdout_fraction, random_state=options.seed)


def evaluate(pipeline: Pipeline, task: Task, features: pd.DataFrame, target: pd.Series) -> dict:
    """Holdout metrics. Classification: accuracy, macro F1, log loss, ROC AUC (binary).
    Regression: RMSE, MAE, R²."""
    predicted = pipeline.predict(features)
    result: dict = {"holdout_rows": len(target)}
    if task == "regression":
        result["rmse"] = float(np.sqrt(skm.mean_squared_error(target, predicted)))
        result["mae"] = float(skm.mean_absolute_error(target, predicted))
        result["r2"] = float(skm.r2_score(target, predicted))
        return result
    result["accuracy"] = float(skm.accuracy_score(target, predicted))
    result["macro_f1"] = float(skm.f1_score(target, predicted, average="macro"))
    if hasattr(pipeline, "predict_proba"):
        probabilities = pipeline.predict_proba(features)
        classes = pipeline.classes_
        # Undefined when the holdout holds a class the model never saw: leave it out.
        with contextlib.suppress(ValueError):
            result["log_loss"] = float(skm.log_loss(target, probabilities, labels=classes))
        if len(classes) == 2 and target.nunique() == 2:
            result["roc_auc"] = float(skm.roc_auc_score(target == classes[1], probabilities[:, 1]))
    return result


def diagnostics(pipeline: Pipeline, task: Task, features: pd.DataFrame, target: pd.Series) -> dict:
    """What the model report plots: the holdout confusion matrix, or actual vs predicted values."""
    predicted = pipeline.predict(features)
    if task == "classification":
        labels = list(pipeline.classes_)
        matrix = skm.confusion_matrix(target, predicted, labels=labels)
        return {"labels": [to_json_value(v) for v in labels], "confusion_matrix": matrix.tolist()}
    keep = slice(0, MAX_DIAGNOSTIC_POINTS)
    return {
        "actual": [float(v) for v in np.asarray(target)[keep]],
        "predicted": [float(v) for v in np.asarray(predicted)[keep]],
    }


def classes_of(trained: TrainedModel) -> list | None:
    if trained.task != "classification":
        return None
    return [to_json_value(c) for c in trained.pipeline.classes_]

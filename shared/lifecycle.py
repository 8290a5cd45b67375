"""Training a new version and deciding whether it replaces the active one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from shared.errors import InvalidInput, PredictqError
from shared.inputs import prepare
from shared.store import ModelStore
from shared.tables import file_sha256, read_table
from shared.training import COMPARISON_METRIC, TrainedModel, TrainingOptions, evaluate, train

log = logging.getLogger(__name__)

ActivationRule = Literal["if_better", "always", "never"]


def train_version(
    store: ModelStore,
    data_path: Path,
    options: TrainingOptions,
    activate: ActivationRule = "always",
    still_wanted: Callable[[], bool] | None = None,
) -> dict:
    """Train on ``data_path``, save an immutable version, and activate it by ``activate``.

    ``still_wanted``, when given, is asked right before activating: a job cancelled while
    training keeps its version saved but never made active.

    Returns a JSON-ready account: the new version, its metrics, which versions were
    compared on which score, and whether it was promoted and why.
    """
    frame = read_table(data_path)
    trained = train(frame, options)
    data_info = {"path": str(data_path), "sha256": file_sha256(data_path), "rows": len(frame)}
    version = store.save(trained, data_info)
    decision = _decide(store, trained, activate)
    if decision["promoted"] and still_wanted is not None and not still_wanted():
        decision = {**decision, "promoted": False, "reason": "the job was cancelled before activation"}
    if decision["promoted"]:
        store.activate(version)
        log.info("activated model %s: %s", version, decision["reason"])
    return {"version": version, "task": trained.task, "metrics": trained.metrics, **decision}


def _decide(store: ModelStore, trained: TrainedModel, rule: ActivationRule) -> dict:
    metric = COMPARISON_METRIC[trained.task]
    active_version = store.active_version()
    comparison = {"metric": metric, "candidate_score": trained.score, "active_version": active_version}
    if rule == "never":
        return {**comparison, "promoted": False, "reason": "activation not requested (activate=never)"}
    if active_version is None:
        return {**comparison, "promoted": True, "reason": "no model was active"}
    if rule == "always":
        return {**comparison, "promoted": True, "reason": "activation requested (activate=always)"}
    try:
        active_score = score_on_holdout(store, active_version, trained)
    except PredictqError as exc:
        return {**comparison, "promoted": False, "reason": f"the active model cannot be compared: {exc.detail}"}
    comparison["active_score"] = active_score
    if trained.score >= active_score:
        reason = f"{metric} {trained.score:.4f} >= active {active_score:.4f} on the same holdout rows"
        return {**comparison, "promoted": True, "reason": reason}
    reason = f"{metric} {trained.score:.4f} < active {active_score:.4f} on the same holdout rows; kept the active model"
    return {**comparison, "promoted": False, "reason": reason}


def score_on_holdout(store: ModelStore, version: str, trained: TrainedModel) -> float:
    """Score an existing version on the new model's holdout rows, by the same metric."""
    model = store.load(version)
    if model.task != trained.task or model.manifest["target"] != trained.options.target:
        raise InvalidInput(
            f"version {version} predicts {model.manifest['target']!r} ({model.task}), "
            f"the candidate {trained.options.target!r} ({trained.task})"
        )
    prepared = prepare(trained.holdout_frame, model.schema, "warn")
    metrics = evaluate(model.pipeline, trained.task, prepared.frame, trained.holdout_target)
    return metrics[COMPARISON_METRIC[trained.task]]

"""Scoring rows with a loaded model, and keeping the right model in memory."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.engine import labels_from
from shared.errors import NoActiveModel, PredictqError
from shared.inputs import PreparedInput, prepare, prepare_rows
from shared.request_rows import prepare_small
from shared.store import LoadedModel, ModelStore
from shared.values import to_json_value

log = logging.getLogger(__name__)

# Up to this many rows a request is checked and encoded value by value (shared.request_rows);
# above it, column by column with numpy, which measured faster from here on.
SMALL_REQUEST_ROWS = 200


@dataclass(frozen=True)
class Scored:
    """What scoring rows gave, kept as columns: no Python object per row.

    ``predictions`` holds one label or number per row; ``probabilities`` one column per
    class, in the order of ``classes`` (None for a regressor or a classifier without them).
    """

    prepared: PreparedInput
    predictions: np.ndarray
    probabilities: np.ndarray | None
    classes: list | None

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes or []]

    def prediction_list(self) -> list:
        if self.predictions.dtype.kind in "biuUS":  # numbers, booleans, text: Python values already
            return self.predictions.tolist()
        return [to_json_value(v) for v in self.predictions]  # floats (NaN to None) and objects

    def probability_rows(self) -> list[dict] | None:
        if self.probabilities is None:
            return None
        names = self.class_names
        return [dict(zip(names, row, strict=True)) for row in self.probabilities.tolist()]


def predict_columns(model: LoadedModel, prepared: PreparedInput) -> Scored:
    """The one call into the model: labels or numbers, and class probabilities, as arrays.

    Classifier labels are taken from the probabilities so the two always agree.
    """
    output, tie_tolerance = model.engine.score(prepared)
    if not model.engine.probabilities:
        return Scored(prepared, output, None, None)
    classes = model.engine.classes
    return Scored(prepared, classes[labels_from(output, tie_tolerance)], output, model.engine.class_values)


def score_columns(model: LoadedModel, frame: pd.DataFrame, *, row_offset: int = 0) -> Scored:
    """Coerce, check and score ``frame`` (a batch chunk or a request's rows)."""
    return predict_columns(model, prepare(frame, model.schema, model.policy, row_offset=row_offset))


def predict_prepared(model: LoadedModel, prepared: PreparedInput) -> tuple[list, list[dict] | None]:
    scored = predict_columns(model, prepared)
    return scored.prediction_list(), scored.probability_rows()


def score_frame(
    model: LoadedModel, frame: pd.DataFrame, *, row_offset: int = 0
) -> tuple[PreparedInput, list, list[dict] | None]:
    scored = score_columns(model, frame, row_offset=row_offset)
    return scored.prepared, scored.prediction_list(), scored.probability_rows()


def prediction_response(model: LoadedModel, frame: pd.DataFrame) -> dict[str, Any]:
    """The body of a POST /predict answer for ``frame``, by the vectorised path."""
    return prediction_body(model, *score_frame(model, frame))


def predict_instances(model: LoadedModel, instances: Any) -> tuple[Scored, dict[str, Any]]:
    """Score the JSON rows of a POST /predict; the scores and the answer's body.

    Up to :data:`SMALL_REQUEST_ROWS` rows value by value, above column by column; neither
    builds a frame.
    """
    extra = {model.manifest["target"]}
    small = isinstance(instances, list) and len(instances) <= SMALL_REQUEST_ROWS
    prepare_json = prepare_small if small else prepare_rows
    prepared = prepare_json(instances, model.schema, model.policy, allowed_extra=extra)
    scored = predict_columns(model, prepared)
    return scored, prediction_body(model, prepared, scored.prediction_list(), scored.probability_rows())


def prediction_body(
    model: LoadedModel, prepared: PreparedInput, predictions: list, probabilities: list[dict] | None
) -> dict[str, Any]:
    """The body of a POST /predict answer, from what ``score_frame`` returned."""
    body: dict[str, Any] = {"model_version": model.version, "predictions": predictions}
    if probabilities is not None:
        body["probabilities"] = probabilities
    body["warnings"] = prepared.warnings()
    return body


class ModelCache:
    """Loaded models by version, least recently used dropped first."""

    def __init__(self, store: ModelStore, max_models: int = 4):
        self.store = store
        self.max_models = max_models
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version: str) -> LoadedModel:
        with self._lock:
            if version in self._models:
                self._models.move_to_end(version)
                return self._models[version]
        model = self.store.load(version)
        with self._lock:
            self._models[version] = model
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
        return model


class ActiveModel:
    """The active model, re-read when the active pointer moves.

    The pointer is checked at most once per ``check_interval_s``; one thread loads the
    new version while the others keep answering with the old one, so a swap never
    fails or delays requests in flight. A version that fails to load is logged and
    the previous one stays in service.
    """

    def __init__(self, store: ModelStore, check_interval_s: float = 1.0):
        self.store = store
        self.check_interval_s = check_interval_s
        self._current: LoadedModel | None = None
        self._checked_at = -float("inf")
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def get(self) -> LoadedModel:
        if time.monotonic() - self._checked_at >= self.check_interval_s:
            self.refresh()
        if self._current is None:
            raise NoActiveModel(self.last_error or "No model has been trained and activated yet; run `predictq train`")
        return self._current

    def refresh(self) -> None:
        if not self._lock.acquire(blocking=self._current is None):
            return  # another thread is already checking; serve the current model
        try:
            self._checked_at = time.monotonic()
            version = None
            try:
                version = self.store.active_version()
                if version is None or (self._current and self._current.version == version):
                    return
                self._current = self.store.load(version)
                self.last_error = None
                log.info("serving model %s", version)
            except PredictqError as exc:
                self.last_error = f"Active model {version} cannot be loaded: {exc.detail}"
                log.error(self.last_error)
            except Exception as exc:
                # Storage away for a moment, or a pickle that will not load here: whatever it
                # is, the model already in memory keeps answering.
                self.last_error = f"Active model {version} cannot be loaded: {type(exc).__name__}: {exc}"
                log.exception(self.last_error)
        finally:
            self._lock.release()

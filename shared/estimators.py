"""Estimators by name, so a request or a command line never names a class to import."""

from __future__ import annotations

import importlib
import json
from typing import Literal

from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge

from shared.errors import TrainingError

Task = Literal["classification", "regression"]

REGISTRY: dict[Task, dict[str, tuple[type, dict]]] = {
    "classification": {
        "logistic": (LogisticRegression, {"max_iter": 1000}),
        "random_forest": (RandomForestClassifier, {"n_estimators": 100}),
        "hist_gradient_boosting": (HistGradientBoostingClassifier, {}),
    },
    "regression": {
        "ridge": (Ridge, {}),
        "random_forest": (RandomForestRegressor, {"n_estimators": 100}),
        "hist_gradient_boosting": (HistGradientBoostingRegressor, {}),
    },
}
# The linear model of each task under one name, so "linear" works for both.
ALIASES = {"linear": {"classification": "logistic", "regression": "ridge"}}
DEFAULT_ESTIMATOR = "random_forest"


def make_estimator(
    name: str | None,
    task: Task,
    params: dict | None = None,
    *,
    seed: int = 0,
    allow_dotted_path: bool = False,
) -> tuple[str, BaseEstimator]:
    """Build an unfitted estimator and return it with its canonical name.

    Parameters
    ----------
    name : str or None
        A registry name (``logistic``, ``ridge``, ``linear``, ``random_forest``,
        ``hist_gradient_boosting``), or a dotted class path when ``allow_dotted_path``.
    task : {"classification", "regression"}
    params : dict, optional
        Keyword arguments for the estimator; they override the registry's defaults.
    seed : int
        Passed as ``random_state`` to estimators that take one.
    allow_dotted_path : bool
        True only for the command line and config files: never for HTTP requests.
    """
    name = ALIASES.get(name or DEFAULT_ESTIMATOR, {}).get(task, name or DEFAULT_ESTIMATOR)
    params = dict(params or {})
    if name in REGISTRY[task]:
        cls, defaults = REGISTRY[task][name]
        params = {**defaults, **params}
    elif "." in name:
        if not allow_dotted_path:
            raise TrainingError(f"Estimator {name!r}: class paths are allowed from the command line only")
        cls = _import_class(name)
    else:
        known = sorted(REGISTRY[task]) + sorted(ALIASES)
        raise TrainingError(f"Unknown estimator {name!r} for {task}; choose one of {known}")
    if "random_state" in cls().get_params() and "random_state" not in params:
        params["random_state"] = seed
    try:
        return name, cls(**params)
    except TypeError as exc:
        raise TrainingError(f"Bad parameters for {name}: {exc}") from exc


def _import_class(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise TrainingError(f"Cannot import estimator class {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and hasattr(cls, "fit") and hasattr(cls, "predict")):
        raise TrainingError(f"{path!r} is not an estimator class (needs fit and predict)")
    return cls


def parse_params(pairs: list[str]) -> dict:
    """``["n_estimators=100", "max_depth=null"]`` -> ``{"n_estimators": 100, "max_depth": None}``.

    Values are read as JSON when they parse, else kept as strings.
    """
    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise TrainingError(f"Parameter {pair!r} is not of the form key=value")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params

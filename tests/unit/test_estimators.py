"""The estimator registry: names for both tasks, parameters, and dotted class paths."""

from __future__ import annotations

import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge

from shared.errors import TrainingError
from shared.estimators import make_estimator, parse_params


@pytest.mark.parametrize(
    ("name", "task", "cls"),
    [
        ("logistic", "classification", LogisticRegression),
        ("random_forest", "classification", RandomForestClassifier),
        ("hist_gradient_boosting", "classification", HistGradientBoostingClassifier),
        ("ridge", "regression", Ridge),
        ("random_forest", "regression", RandomForestRegressor),
        ("hist_gradient_boosting", "regression", HistGradientBoostingRegressor),
    ],
)
def test_registry_names_build_their_estimator(name: str, task: str, cls: type) -> None:
    """Each registry name builds the estimator of its task, under its own name."""
    canonical, estimator = make_estimator(name, task)

    assert canonical == name
    assert type(estimator) is cls


@pytest.mark.parametrize(
    ("task", "name", "cls"), [("classification", "logistic", LogisticRegression), ("regression", "ridge", Ridge)]
)
def test_linear_is_the_linear_model_of_each_task(task: str, name: str, cls: type) -> None:
    """'linear' means logistic regression or ridge depending on the task."""
    canonical, estimator = make_estimator("linear", task)

    assert canonical == name
    assert type(estimator) is cls


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_no_name_means_random_forest(task: str) -> None:
    """The default estimator is the random forest of the task."""
    assert make_estimator(None, task)[0] == "random_forest"


def test_params_override_defaults_and_seed_sets_random_state() -> None:
    """Explicit parameters win over registry defaults; the seed becomes random_state unless given."""
    _, forest = make_estimator("random_forest", "classification", {"max_depth": 3}, seed=7)
    assert (forest.n_estimators, forest.max_depth, forest.random_state) == (100, 3, 7)

    _, forest = make_estimator("random_forest", "regression", {"n_estimators": 5, "random_state": 1}, seed=7)
    assert (forest.n_estimators, forest.random_state) == (5, 1)


def test_unknown_name_is_refused_with_the_choices() -> None:
    """A name outside the registry fails and lists the names of that task."""
    with pytest.raises(TrainingError, match=r"Unknown estimator 'svm' for regression.*'ridge'"):
        make_estimator("svm", "regression")


def test_name_of_the_other_task_is_refused() -> None:
    """'logistic' is not a regressor."""
    with pytest.raises(TrainingError, match="Unknown estimator 'logistic' for regression"):
        make_estimator("logistic", "regression")


def test_bad_parameter_is_a_training_error() -> None:
    """A parameter the estimator does not take fails with the estimator's name."""
    with pytest.raises(TrainingError, match="Bad parameters for ridge"):
        make_estimator("ridge", "regression", {"n_trees": 3})


def test_dotted_class_path_is_refused_by_default() -> None:
    """Class paths are for the command line only: never importable from a request."""
    with pytest.raises(TrainingError, match="command line only"):
        make_estimator("sklearn.dummy.DummyClassifier", "classification")


def test_dotted_class_path_is_imported_when_allowed() -> None:
    """With allow_dotted_path a class path builds that class, seeded."""
    name, estimator = make_estimator("sklearn.dummy.DummyClassifier", "classification", seed=3, allow_dotted_path=True)

    assert name == "sklearn.dummy.DummyClassifier"
    assert type(estimator) is DummyClassifier
    assert estimator.random_state == 3


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("sklearn.nothing.Here", "Cannot import"),
        ("sklearn.dummy.Nope", "Cannot import"),
        ("collections.OrderedDict", "not an estimator"),
    ],
)
def test_dotted_path_that_is_not_an_estimator_is_refused(path: str, message: str) -> None:
    """Missing modules, missing classes and non-estimators fail with a TrainingError."""
    with pytest.raises(TrainingError, match=message):
        make_estimator(path, "classification", allow_dotted_path=True)


def test_parse_params_reads_json_values() -> None:
    """key=value pairs parse as JSON when they can, else stay strings."""
    assert parse_params(["n_estimators=100", "max_depth=null", "criterion=gini", "alpha=0.5", "flag=true"]) == {
        "n_estimators": 100,
        "max_depth": None,
        "criterion": "gini",
        "alpha": 0.5,
        "flag": True,
    }


@pytest.mark.parametrize("pair", ["n_estimators", "=3"])
def test_parse_params_refuses_pairs_without_key_or_value(pair: str) -> None:
    """A pair without '=' or without a key is an error."""
    with pytest.raises(TrainingError, match="key=value"):
        parse_params([pair])

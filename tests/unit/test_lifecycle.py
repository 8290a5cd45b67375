"""train_version: a new version per run, promoted or kept out by the activation rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.lifecycle import train_version
from shared.store import MODEL_FILE, ModelStore
from shared.training import TrainingOptions

FOREST = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 20})
# Always predicts the most common species: a model any real classifier should beat.
DUMMY = TrainingOptions(target="species", estimator="sklearn.dummy.DummyClassifier", allow_dotted_path=True)


def test_first_version_is_activated_whatever_the_rule(store: ModelStore, penguins_csv: Path) -> None:
    """With nothing active, if_better promotes the first model."""
    result = train_version(store, penguins_csv, FOREST, activate="if_better")

    assert result["promoted"] is True
    assert result["reason"] == "no model was active"
    assert store.active_version() == result["version"]
    assert result["metrics"] == store.manifest(result["version"])["metrics"]["holdout"]


def test_if_better_keeps_a_worse_model_out(store: ModelStore, penguins_csv: Path) -> None:
    """A dummy classifier scores below the active forest on the same rows and is not activated."""
    forest = train_version(store, penguins_csv, FOREST, activate="always")

    dummy = train_version(store, penguins_csv, DUMMY, activate="if_better")

    assert dummy["promoted"] is False
    assert dummy["metric"] == "macro_f1"
    assert dummy["active_version"] == forest["version"]
    assert dummy["candidate_score"] < dummy["active_score"]
    assert dummy["active_score"] == pytest.approx(forest["metrics"]["macro_f1"])  # same seed, same holdout
    assert "kept the active model" in dummy["reason"]
    assert store.active_version() == forest["version"]
    assert dummy["version"] in store.versions()  # saved all the same, for inspection


def test_if_better_promotes_a_better_model(store: ModelStore, penguins_csv: Path) -> None:
    """A forest beats the active dummy on the same holdout rows and replaces it."""
    dummy = train_version(store, penguins_csv, DUMMY, activate="always")

    forest = train_version(store, penguins_csv, FOREST, activate="if_better")

    assert forest["promoted"] is True
    assert forest["active_version"] == dummy["version"]
    assert forest["candidate_score"] > forest["active_score"]
    assert store.active_version() == forest["version"]


def test_always_promotes_even_a_worse_model(store: ModelStore, penguins_csv: Path) -> None:
    """activate='always' skips the comparison."""
    train_version(store, penguins_csv, FOREST, activate="always")

    dummy = train_version(store, penguins_csv, DUMMY, activate="always")

    assert dummy["promoted"] is True
    assert "active_score" not in dummy
    assert store.active_version() == dummy["version"]


def test_never_saves_without_activating(store: ModelStore, penguins_csv: Path) -> None:
    """activate='never' saves a version and leaves the store without an active one."""
    result = train_version(store, penguins_csv, FOREST, activate="never")

    assert result["promoted"] is False
    assert store.versions() == [result["version"]]
    assert store.active_version() is None


def test_models_of_another_target_are_not_compared(store: ModelStore, penguins_csv: Path) -> None:
    """if_better refuses to compare a species classifier with an active body-mass regressor."""
    mass = train_version(
        store, penguins_csv, TrainingOptions(target="body_mass_g", estimator="ridge"), activate="always"
    )

    result = train_version(store, penguins_csv, FOREST, activate="if_better")

    assert result["promoted"] is False
    assert "cannot be compared" in result["reason"]
    assert store.active_version() == mass["version"]


def test_unloadable_active_model_is_not_replaced_silently(store: ModelStore, penguins_csv: Path) -> None:
    """if_better does not promote over an active model it cannot load; the reason says why."""
    active = train_version(store, penguins_csv, FOREST, activate="always")
    (store.storage.root / "models" / active["version"] / MODEL_FILE).write_bytes(b"damaged")

    result = train_version(store, penguins_csv, FOREST, activate="if_better")

    assert result["promoted"] is False
    assert "checksum" in result["reason"]

"""Keeping the right model in memory (hot swap) and the one call into it."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import shared.serving
from shared.errors import NoActiveModel
from shared.inputs import prepare
from shared.serving import ActiveModel, ModelCache, predict_prepared, prediction_response
from shared.store import MODEL_FILE, ModelStore
from shared.training import TrainedModel


class FakeClock:
    """Stands in for the time module in shared.serving, so intervals pass without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(shared.serving, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def damage(store: ModelStore, version: str) -> None:
    (store.storage.root / "models" / version / MODEL_FILE).write_bytes(b"damaged")


def test_no_active_model_is_an_error_with_a_hint(store: ModelStore) -> None:
    """Before anything is activated, get() raises NoActiveModel telling how to train."""
    with pytest.raises(NoActiveModel, match="predictq train"):
        ActiveModel(store, check_interval_s=0).get()


def test_newly_activated_version_is_picked_up_without_restart(
    store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """With check_interval_s=0 the next get() after activate() serves the new version."""
    first = save_model(species_model)
    active = ActiveModel(store, check_interval_s=0)
    assert active.get().version == first

    second = save_model(species_model)

    assert active.get().version == second


def test_first_model_is_found_once_it_is_trained(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """A process started before any model exists serves the first one activated, without restart."""
    active = ActiveModel(store, check_interval_s=0)
    with pytest.raises(NoActiveModel):
        active.get()

    version = save_model(species_model)

    assert active.get().version == version


def test_pointer_is_read_at_most_once_per_interval(
    store: ModelStore, species_model: TrainedModel, save_model, clock: FakeClock
) -> None:
    """Within check_interval_s the current model is served; once it has passed the new one is."""
    first = save_model(species_model)
    active = ActiveModel(store, check_interval_s=5.0)
    assert active.get().version == first

    second = save_model(species_model)
    clock.now += 4.9
    assert active.get().version == first

    clock.now += 0.1
    assert active.get().version == second


def test_unloadable_new_version_leaves_the_old_one_serving(
    store: ModelStore, species_model: TrainedModel, save_model, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged newly activated version is logged and the previous model keeps answering."""
    first = save_model(species_model)
    active = ActiveModel(store, check_interval_s=0)
    assert active.get().version == first
    second = save_model(species_model)
    damage(store, second)

    with caplog.at_level(logging.ERROR, logger="shared.serving"):
        assert active.get().version == first

    assert second in active.last_error
    assert "checksum" in active.last_error
    assert any(second in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_unloadable_first_version_is_unavailable_with_the_reason(
    store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """With nothing loaded yet, a damaged active version makes get() fail saying why."""
    version = save_model(species_model)
    damage(store, version)

    with pytest.raises(NoActiveModel, match=rf"{version} cannot be loaded.*checksum"):
        ActiveModel(store, check_interval_s=0).get()


def test_model_cache_keeps_the_most_recently_used(store: ModelStore, species_model: TrainedModel, save_model) -> None:
    """The cache returns the same object for a cached version and drops the least recently used."""
    first, second = save_model(species_model, activate=False), save_model(species_model, activate=False)
    cache = ModelCache(store, max_models=1)

    loaded = cache.get(first)
    assert cache.get(first) is loaded
    cache.get(second)
    assert cache.get(first) is not loaded


def test_classifier_labels_agree_with_probabilities(
    store: ModelStore, species_model: TrainedModel, save_model, penguins: pd.DataFrame
) -> None:
    """Each label is the class with the highest probability, and each probability row sums to 1."""
    model = store.load(save_model(species_model))
    prepared = prepare(penguins, model.schema)

    labels, probabilities = predict_prepared(model, prepared)

    assert len(labels) == len(probabilities) == len(penguins)
    for label, row in zip(labels, probabilities, strict=True):
        assert set(row) == set(model.classes)
        assert label == max(row, key=row.get)
        assert sum(row.values()) == pytest.approx(1.0)


def test_regressor_returns_numbers_and_no_probabilities(
    store: ModelStore, mass_model: TrainedModel, save_model, penguins: pd.DataFrame
) -> None:
    """A regression response carries plain floats and no probabilities key."""
    model = store.load(save_model(mass_model))

    body = prediction_response(model, penguins.head(5))

    assert "probabilities" not in body
    assert all(type(p) is float for p in body["predictions"])
    expected = mass_model.pipeline.predict(prepare(penguins.head(5), mass_model.schema).frame)
    np.testing.assert_array_equal(body["predictions"], expected)

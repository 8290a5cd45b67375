"""Shared fixtures: tiny real models fitted on the demo table, stores and apps in tmp_path."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from api.errors import PROBLEM_JSON
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.tables import file_sha256, read_table
from shared.training import TrainedModel, TrainingOptions, train

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
# Enough trees for stable probabilities, few enough that fitting takes milliseconds.
FAST_FOREST = {"n_estimators": 20}


@pytest.fixture(autouse=True)
def _no_predictq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("PREDICTQ_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def penguins_csv() -> Path:
    """The demo dataset: 344 penguins, NAs included."""
    return PENGUINS_CSV


@pytest.fixture(scope="session")
def penguins_table(penguins_csv: Path) -> pd.DataFrame:
    return read_table(penguins_csv)


@pytest.fixture
def penguins(penguins_table: pd.DataFrame) -> pd.DataFrame:
    """A copy of the demo table that a test may change."""
    return penguins_table.copy()


@pytest.fixture(scope="session")
def species_model(penguins_table: pd.DataFrame) -> TrainedModel:
    """A random forest classifying species (three classes)."""
    return train(penguins_table, TrainingOptions(target="species", estimator="random_forest", params=FAST_FOREST))


@pytest.fixture(scope="session")
def mass_model(penguins_table: pd.DataFrame) -> TrainedModel:
    """A random forest regressing body mass."""
    return train(penguins_table, TrainingOptions(target="body_mass_g", estimator="random_forest", params=FAST_FOREST))


@pytest.fixture(scope="session")
def mass_ridge(penguins_table: pd.DataFrame) -> TrainedModel:
    """A linear regressor: its predictions keep moving beyond the training range, unlike a forest's."""
    return train(penguins_table, TrainingOptions(target="body_mass_g", estimator="ridge"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, model_check_interval_s=0)


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    return ModelStore(LocalStorage(settings.data_dir))


@pytest.fixture
def save_model(store: ModelStore) -> Callable[..., str]:
    """Save a trained model as a new version (activated unless told otherwise).

    ``policy`` stores it with another out-of-range policy, as if trained with that option.
    """

    def save(trained: TrainedModel, *, activate: bool = True, policy: str | None = None) -> str:
        if policy is not None:
            options = dataclasses.replace(trained.options, out_of_range_policy=policy)
            trained = dataclasses.replace(trained, options=options)
        data_info = {"path": str(PENGUINS_CSV), "sha256": file_sha256(PENGUINS_CSV), "rows": 344}
        version = store.save(trained, data_info)
        if activate:
            store.activate(version)
        return version

    return save


@pytest.fixture
def app(settings: Settings) -> Flask:
    app = create_app(settings)
    app.testing = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_client(settings: Settings) -> Callable[..., FlaskClient]:
    """A client for an app on the same data dir with some settings changed."""

    def make(**changes: object) -> FlaskClient:
        app = create_app(settings.model_copy(update=changes))
        app.testing = True
        return app.test_client()

    return make


@pytest.fixture
def problem_of() -> Callable[[TestResponse, int], dict]:
    """Check that a response is an RFC 9457 problem with ``status``; return its body."""

    def check(response: TestResponse, status: int) -> dict:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == PROBLEM_JSON
        body = response.get_json(force=True)
        assert body["status"] == status
        assert body["type"].startswith(("urn:predictq:problem:", "about:blank"))
        assert isinstance(body["title"], str)
        assert body["title"]
        assert isinstance(body["detail"], str)
        assert body["detail"]
        return body

    return check

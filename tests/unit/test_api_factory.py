"""create_app: the factory builds an app from the settings it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from api import create_app
from api.services import Services
from shared.settings import Settings


def test_factory_uses_the_settings_it_is_given(tmp_path: Path) -> None:
    """create_app(settings) serves from settings.data_dir and limits bodies to max_request_bytes."""
    settings = Settings(data_dir=tmp_path, max_request_bytes=4096)

    app = create_app(settings)

    services = app.extensions["predictq"]
    assert isinstance(services, Services)
    assert services.settings is settings
    assert services.store.storage.root == tmp_path
    assert app.config["MAX_CONTENT_LENGTH"] == 4096


def test_factory_reads_the_environment_when_given_no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without settings, create_app reads PREDICTQ_* variables."""
    monkeypatch.setenv("PREDICTQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PREDICTQ_SYNC_MAX_ROWS", "7")

    settings = create_app().extensions["predictq"].settings

    assert settings.data_dir == tmp_path
    assert settings.sync_max_rows == 7

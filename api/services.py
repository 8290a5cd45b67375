"""What the request handlers share in one process: settings, model store, active model."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from shared.serving import ActiveModel
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    active: ActiveModel

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        store = ModelStore(LocalStorage(settings.data_dir), allow_version_mismatch=settings.allow_version_mismatch)
        return cls(settings, store, ActiveModel(store, settings.model_check_interval_s))


def services() -> Services:
    return current_app.extensions["predictq"]

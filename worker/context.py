"""What tasks share inside one worker process, built once from the app's Settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from shared.jobs import JobStore, job_store_client
from shared.serving import ModelCache
from shared.settings import Settings
from shared.storage import Storage
from shared.store import ModelStore


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    store: ModelStore
    models: ModelCache

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        client = job_store_client(settings)
        store = ModelStore.from_settings(settings)
        return cls(settings, client, JobStore(client, settings.job_retention_s), store, ModelCache(store))

    @property
    def storage(self) -> Storage:
        """Where models and job files are shared with the API and other workers."""
        return self.store.storage


def context_of(app: Celery) -> WorkerContext:
    context = getattr(app, "predictq_context", None)
    if context is None:
        context = WorkerContext.from_settings(app.predictq_settings)
        app.predictq_context = context
    return context

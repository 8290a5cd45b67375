"""What the request handlers share in one process: settings, model store, active model,
and (created on first use, so /predict never needs Redis) the job store and the queue."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from celery import Celery
from flask import current_app

from shared.jobs import JobStore, job_store_client
from shared.serving import ActiveModel, ModelCache
from shared.settings import Settings
from shared.storage import Storage
from shared.store import LoadedModel, ModelStore
from shared.store_id import ensure_store_id
from shared.traffic import TrafficMonitor
from worker.celery_app import make_celery


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    active: ActiveModel
    pinned: ModelCache
    traffic: TrafficMonitor
    redis_client: redis.Redis | None = None
    _celery: Celery | None = field(default=None, repr=False)
    _jobs: JobStore | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, redis_client: redis.Redis | None = None) -> Services:
        store = ModelStore.from_settings(settings)
        active = ActiveModel(store, settings.model_check_interval_s)
        return cls(settings, store, active, ModelCache(store), TrafficMonitor(settings.traffic_dir), redis_client)

    @property
    def storage(self) -> Storage:
        """Where models and job files are shared with the workers."""
        return self.store.storage

    def store_id(self) -> str:
        """The model store's id, recorded on each job so that only workers seeing this store serve it.

        Read for each job, not kept: a store made anew under a running API gets a new id,
        and the jobs it queues from then on must carry that one.
        """
        return ensure_store_id(self.storage)

    def model(self, version: str | None = None) -> LoadedModel:
        """A pinned version (kept loaded for later requests), else the active one."""
        return self.pinned.get(version) if version else self.active.get()

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            client = self.redis_client or job_store_client(self.settings)
            self._jobs = JobStore(client, self.settings.job_retention_s)
        return self._jobs

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.settings)
        return self._celery


def services() -> Services:
    return current_app.extensions["predictq"]

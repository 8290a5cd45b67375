"""What tasks share inside one worker process, built once from the app's Settings."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import redis
from celery import Celery, current_task

from shared.jobs import ACTIVE, JobStore, job_store_client
from shared.serving import ModelCache
from shared.settings import Settings
from shared.storage import Storage
from shared.store import ModelStore
from shared.store_id import describe_storage, ensure_store_id, read_store_id, store_mismatch

log = logging.getLogger(__name__)


class ServableJobStore(JobStore):
    """Job records as this worker's tasks read them: a job queued for another model store fails here.

    Every task reads its job through ``get`` before it does anything, so this is where a
    worker refuses a job it cannot serve: the job is failed with the cause (never left to a
    task that would look for files that are not there), and the task, seeing a finished
    job, skips it. Failing rather than requeueing: a worker on another store is a
    deployment fault to fix, and a requeued message would come back to it without end when
    no other worker runs.
    """

    def __init__(self, client: redis.Redis, retention_s: int, storage: Storage, store_id: str):
        super().__init__(client, retention_s)
        self.storage = storage
        self.store_id = store_id

    def get(self, job_id: str) -> dict:
        record = super().get(job_id)
        if record.get("status") not in ACTIVE or record.get("store_id") in (None, self.store_id):
            return record
        # The store may have been made anew where this worker looks since it started: look
        # again, without creating one (a deleted data directory stays deleted).
        current = read_store_id(self.storage)
        reason = store_mismatch(record["store_id"], current, describe_storage(self.storage), worker_name())
        if reason is None:
            self.store_id = current
            return record
        log.error("refusing job %s: %s", job_id, reason, extra={"job_id": job_id})
        self.fail(job_id, reason)
        return super().get(job_id)


def worker_name() -> str:
    """The Celery node running the current task, else this host and process."""
    hostname = getattr(getattr(current_task, "request", None), "hostname", None)
    return hostname or f"{socket.gethostname()} (pid {os.getpid()})"


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    jobs: ServableJobStore
    store: ModelStore
    models: ModelCache

    @classmethod
    def from_settings(cls, settings: Settings, store_id: str | None = None) -> WorkerContext:
        """``store_id``: the id the worker read at start; read (or created) here when not given."""
        client = job_store_client(settings)
        store = ModelStore.from_settings(settings)
        store_id = store_id or ensure_store_id(store.storage)
        jobs = ServableJobStore(client, settings.job_retention_s, store.storage, store_id)
        return cls(settings, client, jobs, store, ModelCache(store))

    @property
    def storage(self) -> Storage:
        """Where models and job files are shared with the API and other workers."""
        return self.store.storage


def read_store_id_at_start(app: Celery) -> str:
    """Read the store id (writing it into a new store) in the worker's main process.

    Called before the pool forks, so every pool process checks jobs against the store this
    worker saw when it started, even if that store is deleted later.
    """
    storage = ModelStore.from_settings(app.predictq_settings).storage
    app.predictq_store_id = ensure_store_id(storage)
    log.info("serving model store %s at %s", app.predictq_store_id, describe_storage(storage))
    return app.predictq_store_id


def context_of(app: Celery) -> WorkerContext:
    context = getattr(app, "predictq_context", None)
    if context is None:
        context = WorkerContext.from_settings(app.predictq_settings, getattr(app, "predictq_store_id", None))
        app.predictq_context = context
    return context

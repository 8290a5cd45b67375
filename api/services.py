"""What the request handlers share in one process: settings, model store, active model,
and (created on first use, so /predict never needs Redis) the job store and the queue."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import redis
from celery import Celery
from flask import current_app
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from shared.errors import ServiceUnavailable
from shared.jobs import JobStore
from shared.serving import ActiveModel, ModelCache
from shared.settings import Settings
from shared.storage import Storage
from shared.store import LoadedModel, ModelStore
from shared.store_id import ensure_store_id
from shared.traffic import TrafficMonitor
from worker.celery_app import make_celery

# Every Redis call on the request path waits at most this long to connect and for each reply,
# and is tried once: a frozen or unreachable Redis costs a request under a second and a 503,
# never a hang. (redis-py otherwise retries a timeout three times with back-off.) A submission
# makes at most two calls when Redis is down (the record, then its clean-up), so it answers
# within 2 s. Workers keep the longer bound of ``shared.jobs.REDIS_TIMEOUT_S``.
REDIS_REQUEST_TIMEOUT_S = 0.75
# How long GET /readyz waits for workers to answer a ping, and how long it reuses the answer:
# a readiness probe every few seconds does not broadcast every time.
WORKER_PING_TIMEOUT_S = 0.5
WORKER_CHECK_INTERVAL_S = 10.0


def request_redis_client(settings: Settings) -> redis.Redis:
    """The API's client of the job store, bounded by ``REDIS_REQUEST_TIMEOUT_S`` and never retried."""
    if not settings.redis_url:
        raise ServiceUnavailable("No queue is configured: set PREDICTQ_REDIS_URL (the local runner does it for you)")
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_REQUEST_TIMEOUT_S,
        socket_connect_timeout=REDIS_REQUEST_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def request_celery(settings: Settings) -> Celery:
    """The queue contract's Celery app, as a producer bounded like ``request_redis_client``.

    A publish that fails is not retried: the submission answers 503 and leaves nothing behind,
    and the client sends it again.
    """
    app = make_celery(settings)
    app.conf.update(
        broker_connection_timeout=REDIS_REQUEST_TIMEOUT_S,
        broker_connection_retry=False,
        task_publish_retry=False,
        broker_transport_options={
            **app.conf.broker_transport_options,
            "socket_timeout": REDIS_REQUEST_TIMEOUT_S,
            "socket_connect_timeout": REDIS_REQUEST_TIMEOUT_S,
            "retry_on_timeout": False,
        },
    )
    return app


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
    _workers: tuple[float, dict] | None = field(default=None, repr=False)
    _workers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
            client = self.redis_client or request_redis_client(self.settings)
            self._jobs = JobStore(client, self.settings.job_retention_s)
        return self._jobs

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = request_celery(self.settings)
        return self._celery

    def redis_state(self) -> dict:
        """Whether the job store answers a PING within ``REDIS_REQUEST_TIMEOUT_S``."""
        try:
            self.jobs.client.ping()
        except ServiceUnavailable as exc:  # no queue configured
            return {"status": "unconfigured", "detail": exc.detail}
        except RedisError as exc:
            return {"status": "unreachable", "detail": f"Redis did not answer ({type(exc).__name__})"}
        return {"status": "ok"}

    def worker_state(self) -> dict:
        """How many workers answered a ping, at most ``WORKER_CHECK_INTERVAL_S`` ago."""
        with self._workers_lock:
            if self._workers is not None and time.monotonic() - self._workers[0] < WORKER_CHECK_INTERVAL_S:
                return self._workers[1]
        try:
            replies = self.celery.control.ping(timeout=WORKER_PING_TIMEOUT_S) or []
        except (RedisError, OperationalError, OSError) as exc:
            return {"status": "unknown", "detail": f"the queue did not answer ({type(exc).__name__})"}
        count = len(replies)
        state = {"status": "ok" if count else "none", "count": count}
        with self._workers_lock:
            self._workers = (time.monotonic(), state)
        return state


def services() -> Services:
    return current_app.extensions["predictq"]

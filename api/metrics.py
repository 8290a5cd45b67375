"""Prometheus metrics for GET /metrics.

Counted in the request path of each API process (summed over gunicorn workers through
files in ``PROMETHEUS_MULTIPROC_DIR``): requests and their latency, rows predicted by
POST /predict, and input warnings (values outside what training saw, the first sign of
drift). Read when /metrics is scraped, so right whichever process changed them: the active
model version (model store), jobs by kind and status (counters kept by ``JobStore`` in
Redis) and queue depth (length of Celery's Redis lists). Nothing here runs Redis commands
outside a scrape: POST /predict never touches Redis.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import redis
from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from api.services import Services
from shared.errors import PredictqError
from shared.jobs import STATUSES, JobKind
from worker.celery_app import BATCH_QUEUE, TRAINING_QUEUE

log = logging.getLogger(__name__)

EXTENSION = "predictq.metrics"
REQUEST_LABELS = ("endpoint", "method", "status")
# Up to a minute: a large CSV upload is one request too.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUES = (BATCH_QUEUE, TRAINING_QUEUE)
# kombu's Redis transport keeps a queue as one list per priority step: the queue's name for
# priority 0 (what predictq sends), "<name>\x06\x16<step>" for the others.
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)
MULTIPROCESS_DIR_PREFIX = "predictq-metrics-"
# Any token is a valid HTTP method to a client: others are counted as "other", so nobody can
# grow the number of series by inventing methods.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """One app's metric objects, and the registry /metrics reads.

    Each app has its own registries, so apps built in one process (tests) never share counts.
    """

    def __init__(self, services: Services):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "predictq_http_requests",
            "HTTP requests answered, by Flask endpoint, method and status.",
            REQUEST_LABELS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "predictq_http_request_duration_seconds",
            "Time to answer an HTTP request, by Flask endpoint, method and status.",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.rows = Counter(
            "predictq_predicted_rows",
            "Rows answered by POST /predict, by model version.",
            ["model_version"],
            registry=self.registry,
        )
        self.warnings = Counter(
            "predictq_input_warnings",
            "Values sent to POST /predict outside what training saw, by feature and warning kind.",
            ["feature", "kind"],
            registry=self.registry,
        )
        self.scraped = self._scraped_registry(services)

    def _scraped_registry(self, services: Services) -> CollectorRegistry:
        directory = services.settings.prometheus_multiproc_dir
        if directory is None:
            registry = self.registry
        else:
            if not getattr(values.ValueClass, "_multiprocess", False):
                log.warning(
                    "PROMETHEUS_MULTIPROC_DIR was not set when prometheus_client was imported: "
                    "this process's metrics are not written to %s",
                    directory,
                )
            directory.mkdir(parents=True, exist_ok=True)
            # The metric objects above write to files; /metrics sums every process's files.
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(directory))
        registry.register(ScrapeTimeCollector(services))
        return registry

    def observe_response(self, response: Response) -> Response:
        started = g.get("metrics_started")
        method = request.method if request.method in HTTP_METHODS else "other"
        labels = (request.endpoint or "unmatched", method, str(response.status_code))
        self.requests.labels(*labels).inc()
        if started is not None:
            self.latency.labels(*labels).observe(time.perf_counter() - started)
        return response


class ScrapeTimeCollector(Collector):
    """Metrics read when /metrics is scraped: model version, and job and queue counts from Redis."""

    def __init__(self, services: Services):
        self.services = services

    def collect(self) -> Iterator[Metric]:
        yield from self._model()
        if self.services.redis_client is None and self.services.settings.redis_url is None:
            return  # no queue configured: nothing to count, and /metrics still answers
        up = GaugeMetricFamily("predictq_redis_up", "1 when the job counts and queue depths could be read from Redis.")
        try:
            jobs = self.services.jobs.counts()
            depths = {queue: queue_depth(self.services.jobs.client, queue) for queue in QUEUES}
        except RedisError as exc:
            log.warning("metrics: cannot read job counts and queue depths from Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily(
            "predictq_jobs",
            "Jobs by kind and status: queued and running now; finished ones since Redis was created.",
            labels=["kind", "status"],
        )
        every = {(kind, status): 0 for kind in get_args(JobKind) for status in STATUSES}
        for (kind, status), count in {**every, **jobs}.items():
            family.add_metric([kind, status], count)
        yield family
        family = GaugeMetricFamily("predictq_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"])
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family

    def _model(self) -> Iterator[Metric]:
        try:
            version = self.services.active.get().version
        except PredictqError:
            return  # no active model: no info sample (GET /readyz says why)
        yield InfoMetricFamily("predictq_model", "The active model version.", value={"version": version})


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a Celery queue on the Redis broker, over all its priority lists."""
    keys = [queue] + [f"{queue}{KOMBU_PRIORITY_SEPARATOR}{step}" for step in KOMBU_PRIORITY_STEPS]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())


def metrics_of(app: Flask | None = None) -> Metrics:
    return (app or current_app).extensions[EXTENSION]


def record_prediction(model_version: str, rows: int, quality: dict[str, dict[str, int]]) -> None:
    """Count a POST /predict answer: its rows, and its warnings per feature and kind
    (``PreparedInput.quality_summary()``)."""
    metrics = metrics_of()
    metrics.rows.labels(model_version).inc(rows)
    for feature, kinds in quality.items():
        for kind, count in kinds.items():
            metrics.warnings.labels(feature, kind).inc(count)


def init_app(app: Flask, services: Services) -> None:
    """Count every request of ``app`` and serve GET /metrics."""
    from api.routes import metrics as routes  # the route module imports this one

    metrics = Metrics(services)
    app.extensions[EXTENSION] = metrics
    app.before_request(_start_timer)
    app.after_request(metrics.observe_response)
    app.register_blueprint(routes.bp)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def fresh_multiprocess_dir(configured: Path | None) -> Path:
    """The directory for one run of the API's worker processes: ``configured`` emptied of the
    files of a previous run (they would be summed with this one's), else a new temporary one."""
    if configured is None:
        return Path(tempfile.mkdtemp(prefix=MULTIPROCESS_DIR_PREFIX))
    configured.mkdir(parents=True, exist_ok=True)
    for stale in configured.glob("*.db"):
        stale.unlink()
    return configured


def remove_multiprocess_dir(directory: Path) -> None:
    """Remove a run's metric files, and the directory when nothing else is in it."""
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # gone already, or holds something that is not ours
        directory.rmdir()

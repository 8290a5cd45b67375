"""Building the Celery app from Settings."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from celery import Celery
from kombu import Queue

from shared.errors import ServiceUnavailable
from shared.settings import Settings

BATCH_QUEUE = "batch"
TRAINING_QUEUE = "training"

SPLIT_TASK = "predictq.batch.split"
SCORE_TASK = "predictq.batch.score_chunk"
FINALIZE_TASK = "predictq.batch.finalize"
RETRAIN_TASK = "predictq.training.retrain"


def broker_url(settings: Settings) -> str:
    url = settings.broker_url or settings.redis_url
    if not url:
        raise ServiceUnavailable("No queue is configured: set PREDICTQ_REDIS_URL (the local runner does it for you)")
    return kombu_redis_url(url)


def kombu_redis_url(url: str) -> str:
    """``url`` as kombu's Redis transport reads it.

    redis-py names a Unix socket ``unix:///path?db=N``, kombu ``redis+socket:///path?virtual_host=N``
    (it ignores ``db`` there); every other URL means the same to both.
    """
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = dict(parse_qsl(parts.query))
    query["virtual_host"] = query.pop("db", "0")
    # Built by hand: urlunsplit drops the "//" of an empty host, which kombu needs.
    return f"redis+socket://{parts.netloc}{parts.path}?{urlencode(query)}"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for API (producer) and workers (consumer) alike."""
    batch_limits = {"soft_time_limit": settings.batch_soft_time_limit_s, "time_limit": settings.batch_time_limit_s}
    app = Celery("predictq", broker=broker_url(settings), include=["worker.tasks"])
    app.conf.update(
        # Job state lives in our own job records; Celery's result store is not needed.
        task_ignore_result=True,
        # Acknowledge after the task ran, and re-deliver if the worker process dies,
        # so a killed worker's chunk is scored by another instead of being lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: long chunks do not pile up behind each other.
        worker_prefetch_multiplier=1,
        # Unacked messages return to the queue after this long; it must exceed the longest
        # hard time limit, or a slow task would be handed to a second worker while running.
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_default_queue=BATCH_QUEUE,
        task_queues=[Queue(BATCH_QUEUE), Queue(TRAINING_QUEUE)],
        # Retraining has its own queue so a long fit never blocks batch scoring.
        task_routes={"predictq.batch.*": {"queue": BATCH_QUEUE}, "predictq.training.*": {"queue": TRAINING_QUEUE}},
        task_annotations={
            **{name: batch_limits for name in (SPLIT_TASK, SCORE_TASK, FINALIZE_TASK)},
            RETRAIN_TASK: {
                "soft_time_limit": settings.training_soft_time_limit_s,
                "time_limit": settings.training_time_limit_s,
            },
        },
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    app.predictq_settings = settings
    return app

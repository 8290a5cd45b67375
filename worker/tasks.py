"""Celery tasks: thin wrappers that unpack a job id, call ``shared``, record the outcome."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

from shared.batch import (
    JobFiles,
    is_job_id,
    remove_chunks,
    result_columns,
    score_chunk,
    split_input,
    write_results,
)
from shared.errors import BadRequest, JobNotFound, PredictqError
from shared.jobs import ACTIVE, FINALIZE, RETRAIN_LOCK, RUNNING, retrain_lock_token
from shared.lifecycle import train_version
from shared.logs import bind_context
from shared.training import TrainingOptions
from worker.celery_app import FINALIZE_TASK, RETRAIN_TASK, SCORE_TASK, SPLIT_TASK
from worker.context import context_of

log = logging.getLogger(__name__)

RETRAIN_LOCK_RETRY_S = 5
# Renewals per lock lifetime: two may fail (a slow Redis) before the lock lapses under a live fit.
RETRAIN_LOCK_RENEWALS_PER_TTL = 3


def _describe(exc: PredictqError) -> str:
    """A job's error: the detail and its first few faults on one line."""
    return exc.describe(max_errors=5, separator="; ")


class _Step:
    """Whether a job step failed (and so failed its job)."""

    failed = False


@contextlib.contextmanager
def _job_step(context, job_id: str, what: str, soft_limit_s: int, detail_prefix: str = "") -> Iterator[_Step]:
    """Run one step of a job; any failure fails the job with a message a user can act on.

    A domain error or the soft time limit ends the step (``failed`` is set); anything else
    is an internal error, recorded on the job and raised again for the worker's log.
    """
    step = _Step()
    try:
        yield step
    except PredictqError as exc:
        context.jobs.fail(job_id, detail_prefix + _describe(exc))
        step.failed = True
    except SoftTimeLimitExceeded:
        context.jobs.fail(job_id, f"{what} took longer than {soft_limit_s} s")
        step.failed = True
    except Exception as exc:
        context.jobs.fail(job_id, f"{what} failed with an internal error ({type(exc).__name__}); see worker logs")
        raise


def _started_too_often(context, job_id: str, step: str) -> bool:
    """Count this start of ``step``; past ``job_max_deliveries`` starts, fail the job instead.

    The broker delivers again a task whose worker process died (``task_reject_on_worker_lost``):
    a step that kills its process each time (a chunk too big for memory) would loop for ever.
    A step that finished is skipped before it is counted, so the count is of starts that
    never finished.
    """
    limit = context.settings.job_max_deliveries
    starts = context.jobs.count_delivery(job_id, step)
    if starts <= limit:
        return False
    reason = (
        f"{step} was started {limit} times and its worker process died each time (out of memory, or killed); "
        f"the job is failed rather than tried again (PREDICTQ_JOB_MAX_DELIVERIES={limit})"
    )
    log.error("job %s: %s", job_id, reason, extra={"job_id": job_id})
    context.jobs.fail(job_id, reason)
    return True


def _live_job(context, job_id: str) -> dict | None:
    """The job's record, or None when it was cancelled, finished or expired: skip the work.

    A message naming something that is not a job id is dropped unread: ids become Redis
    keys and paths, and a message is not trusted to hold a safe one.
    """
    if not is_job_id(job_id):
        log.warning("message for %r, which is not a job id; dropped", str(job_id)[:40])
        return None
    try:
        record = context.jobs.get(job_id)
    except JobNotFound:
        log.warning("job %s no longer exists; skipping", job_id)
        return None
    bind_context(request_id=record.get("request_id"), model_version=record.get("model_version"))
    return record if record["status"] in ACTIVE else None


@shared_task(name=SPLIT_TASK, bind=True)
def split_batch(self, job_id: str) -> None:
    """Cut a batch job's input into chunks and queue one scoring task per chunk.

    Run again (a redelivered or re-sent message) after the chunk count was recorded, it
    cuts nothing and queues every chunk not yet scored: the first run may have died before
    queueing them all. Before the count was recorded, no chunk was queued, so it splits
    again: the chunk files come out the same.
    """
    context = context_of(self.app)
    record = _live_job(context, job_id)
    if record is None:
        return
    if record.get("chunks") is not None:
        _queue_unscored(self.app, context, job_id, record["chunks"])
        return
    if _started_too_often(context, job_id, "splitting the input"):
        return
    context.jobs.start(job_id)
    chunk_rows = context.settings.job_chunk_rows
    # Failing the job on a soft limit matters here: some chunks may never have been queued,
    # and a job left running would wait for them forever.
    with _job_step(context, job_id, "splitting the input", context.settings.batch_soft_time_limit_s):
        files = JobFiles(context.settings.jobs_dir, job_id, context.storage)
        model = context.models.get(record["model_version"])
        rows, chunks = split_input(files, chunk_rows, record.get("id_column"), result_columns=result_columns(model))
        # Recorded before any chunk is queued: a split run again then knows what to send.
        context.jobs.update(job_id, total=rows, chunks=chunks, chunk_rows=chunk_rows)
        for chunk in range(chunks):
            self.app.send_task(SCORE_TASK, args=[job_id, chunk])


def _queue_unscored(app, context, job_id: str, chunks: int) -> None:
    """Queue the chunks of a split job not yet scored; with all scored, its finalize if unclaimed.

    A chunk still being scored elsewhere is queued a second time: scoring is idempotent and
    a chunk is counted once.
    """
    unscored = context.jobs.missing_chunks(job_id, chunks)
    for chunk in unscored:
        app.send_task(SCORE_TASK, args=[job_id, chunk])
    if unscored:
        log.info("job %s was split already; queued its %d unscored chunks again", job_id, len(unscored))
    elif context.jobs.claim(job_id, FINALIZE):  # the last scorer died before queueing it
        app.send_task(FINALIZE_TASK, args=[job_id])
        log.info("job %s was split and scored already; queued its finalize", job_id)


@shared_task(name=SCORE_TASK, bind=True)
def score_batch_chunk(self, job_id: str, chunk: int) -> None:
    """Score one chunk; the last chunk to finish queues the job's finalisation."""
    context = context_of(self.app)
    record = _live_job(context, job_id)
    if record is None:
        return
    if context.jobs.chunk_done(job_id, chunk):  # a copy of a message sent again: scored already
        log.info("chunk %s of job %s is already scored; skipping", chunk, job_id)
        return
    if _started_too_often(context, job_id, f"chunk {chunk}"):
        return
    files = JobFiles(context.settings.jobs_dir, job_id, context.storage)
    limit_s = context.settings.batch_soft_time_limit_s
    with _job_step(context, job_id, f"chunk {chunk}", limit_s, detail_prefix=f"chunk {chunk} failed: ") as step:
        model = context.models.get(record["model_version"])
        rows = score_chunk(files, chunk, model, int(record["chunk_rows"]), record.get("id_column"))
    if step.failed:
        return
    done = context.jobs.record_chunk(job_id, chunk, rows)
    if done == record["chunks"] and context.jobs.claim(job_id, FINALIZE):
        self.app.send_task(FINALIZE_TASK, args=[job_id])


@shared_task(name=FINALIZE_TASK, bind=True)
def finalize_batch(self, job_id: str) -> None:
    """Join chunk outputs into the job's result files and mark it succeeded."""
    context = context_of(self.app)
    record = _live_job(context, job_id)
    if record is None or _started_too_often(context, job_id, "joining the results"):
        return
    files = JobFiles(context.settings.jobs_dir, job_id, context.storage)
    with _job_step(context, job_id, "joining the results", context.settings.batch_soft_time_limit_s) as step:
        model = context.models.get(record["model_version"])
        quality = write_results(files, record["chunks"], model, job_id, record.get("id_column"))
    if step.failed:
        return
    # Marked succeeded before the chunks go: a crash in between leaves spare files (removed
    # with the job), never a finished job that a redelivered finalize would fail.
    context.jobs.succeed(job_id, quality=quality)
    remove_chunks(files)


@shared_task(name=RETRAIN_TASK, bind=True, max_retries=None)
def retrain(self, job_id: str) -> None:
    """Train a new version; promote it as the job asks. One retrain at a time.

    The training lock names the job and lives ``retrain_lock_ttl_s``, renewed from a thread
    while the fit runs: a worker killed mid-fit lets it lapse within that time, and the
    sweeper, finding a running retrain that holds no lock, fails it.
    """
    context = context_of(self.app)
    record = _live_job(context, job_id)
    if record is None:
        return
    ttl_s = context.settings.retrain_lock_ttl_s
    # Not thread-local: the renewing thread holds the same token as this one.
    lock = context.redis.lock(RETRAIN_LOCK, timeout=ttl_s, thread_local=False)
    if not lock.acquire(blocking=False, token=retrain_lock_token(job_id)):
        # Another retrain holds the lock: wait in the queue rather than in a worker slot.
        raise self.retry(countdown=RETRAIN_LOCK_RETRY_S)
    try:
        if _started_too_often(context, job_id, "training"):
            return
        limit_s = context.settings.training_soft_time_limit_s
        with _renewed(lock, ttl_s / RETRAIN_LOCK_RENEWALS_PER_TTL), _job_step(context, job_id, "training", limit_s):
            _train(context, job_id, record, lock)
    finally:
        with contextlib.suppress(LockError):  # lapsed (Redis away longer than its lifetime)
            lock.release()


@contextlib.contextmanager
def _renewed(lock: Lock, every_s: float) -> Iterator[None]:
    """Renew ``lock`` to its full lifetime every ``every_s`` from a thread, until the block ends."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(every_s):
            try:
                lock.reacquire()
            except LockError:
                # Lapsed or taken: the sweeper may fail this job, and activation is refused below.
                log.error("the training lock lapsed under a running retrain; it will not be activated")
                return
            except RedisError as exc:
                log.warning("renewing the training lock failed (%s); trying again in %.0f s", exc, every_s)

    thread = threading.Thread(target=renew, name="predictq-retrain-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _training_data(settings, data_path: str) -> Path:
    """``data_path`` if it is the configured dataset or a file under the data directory, as the API allows.

    Checked again here: the job record comes from Redis, and whoever can write there must not
    make a worker read (and a model memorise) any file the worker can see.
    """
    path = Path(data_path).resolve()
    if path == settings.dataset_path.resolve() or path.is_relative_to(settings.data_dir.resolve()):
        return path
    log.error("refusing training data outside the data directory: %s", path)
    raise BadRequest("The training data is outside the data directory; the retrain is refused")


def _train(context, job_id: str, record: dict, lock: Lock) -> None:
    """Train and record the outcome; activation as the job asked, unless it was cancelled meanwhile."""
    if not context.jobs.start(job_id):
        return  # cancelled while it waited for the lock
    options = dict(record["options"])
    data_path = options.pop("data_path")
    activate = options.pop("activate")

    def still_wanted() -> bool:
        # A lapsed lock means the sweeper may have failed the job, and another retrain may be training.
        return context.jobs.get(job_id)["status"] == RUNNING and lock.owned()

    def run(path: Path) -> dict:
        return train_version(context.store, path, TrainingOptions(**options), activate, still_wanted)

    if options.pop("data_uploaded", False):  # stored by the API, maybe on another host
        files = JobFiles(context.settings.jobs_dir, job_id, context.storage)
        with files.local_copy(files.training_csv) as local_path:
            result = run(local_path)
    else:
        result = run(_training_data(context.settings, data_path))
    context.jobs.succeed(job_id, result=result, model_version=result["version"])

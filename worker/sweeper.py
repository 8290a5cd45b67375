"""Re-sending the tasks of batch jobs whose queue messages were lost.

The Redis transport pops a message off the queue before it records it as unacknowledged
(celery/kombu#305): a worker killed in between loses the message for good, and late
acknowledgement cannot bring it back. Every step of a batch job is safe to run twice (a
split job is not split again, a chunk is counted once, finalize is claimed once), so the
cure is to send again whatever a job that stopped moving is waiting for. A retrain is never
sent again: a running one whose worker is gone (its training lock lapsed) is failed. Each worker's main
process runs a sweep every ``job_sweep_interval_s``; a Redis lock lets one worker of the
cluster do it per interval.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime

import redis
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from shared.batch import JobFiles, is_job_id
from shared.errors import JobNotFound
from shared.jobs import (
    ACTIVE,
    FINALIZE,
    RUNNING,
    SCORE,
    SPLIT,
    JobStore,
    Recovery,
    is_stalled,
    job_store_client,
    lost_step,
    retrain_lock_job,
)
from shared.settings import Settings
from shared.storage import Storage, open_storage
from worker.celery_app import FINALIZE_TASK, SCORE_TASK, SPLIT_TASK

log = logging.getLogger(__name__)

SWEEP_LOCK = "predictq:lock:sweep"
STOP_TIMEOUT_S = 10.0
WORKER_GONE = (
    "the worker training this retrain stopped before it finished (its training lock lapsed); "
    "no version was activated by it: submit the retrain again"
)


def sweep(app: Celery, jobs: JobStore, stall_after_s: float, now: datetime | None = None) -> dict[str, Recovery]:
    """Send again the lost step of every active batch job that has not moved for ``stall_after_s``;
    fail every running retrain whose worker is gone.

    A running retrain holds the training lock, named after it and renewed while it trains
    (see ``worker.tasks.retrain``): one that does not hold it has lost its worker. Read after
    the record, so a retrain that finished in between is already finished and stays so.

    Parameters
    ----------
    app : Celery
        Sends the tasks.
    jobs : JobStore
        The job records and the set of active jobs.
    stall_after_s : float
        Longer than any one task may run, so a job whose task is still running is left alone.
    now : datetime, optional
        The time to judge stalls by (default: now); re-sent jobs get it as ``progress_at``,
        so the next sweep waits another ``stall_after_s`` before sending them again.

    Returns
    -------
    dict
        The steps sent again, by job id.
    """
    now = now or datetime.now(UTC)
    sent: dict[str, Recovery] = {}
    for job_id in jobs.active_job_ids():
        try:
            record = jobs.get(job_id)
        except JobNotFound:  # expired: nothing left to recover
            jobs.forget(job_id)
            continue
        if record.get("status") not in ACTIVE:  # finished, or a stray hash without a status
            jobs.forget(job_id)
            continue
        if record["kind"] == "retrain" and record["status"] == RUNNING and retrain_lock_job(jobs.client) != job_id:
            if jobs.fail(job_id, WORKER_GONE):
                log.error("retrain job %s: %s", job_id, WORKER_GONE, extra={"job_id": job_id})
            continue
        if not is_stalled(record, now, stall_after_s):
            continue
        if record["kind"] != "batch":
            # A retrain waits for the training lock and runs for up to its own time limit; it
            # is not re-sent. Touched so this is said once per stall period, not every sweep.
            log.warning(
                "%s job %s is %s with no progress for over %s s; not re-sent",
                record["kind"], job_id, record["status"], stall_after_s, extra={"job_id": job_id},
            )  # fmt: skip
            jobs.touch(job_id, now)
            continue
        missing = jobs.missing_chunks(job_id, record["chunks"]) if "chunks" in record else []
        recovery = lost_step(record, missing)
        if recovery is None:
            continue
        _resend(app, jobs, job_id, recovery)
        jobs.touch(job_id, now)
        sent[job_id] = recovery
    return sent


def remove_expired_job_files(
    jobs: JobStore, storage: Storage, settings: Settings, now: float | None = None
) -> list[str]:
    """Delete the input and result files of jobs whose records have expired; return their ids."""
    removed = []
    for job_id in jobs.expired_job_ids(now):
        if not is_job_id(job_id):
            # Not an id the API made: whoever wrote it to Redis, it never becomes a path to delete.
            log.warning("dropping %.80r from the expiry index: not a job id", job_id)
            jobs.files_removed(job_id)
            continue
        JobFiles(settings.jobs_dir, job_id, storage).remove()
        jobs.files_removed(job_id)
        removed.append(job_id)
        log.info("removed the files of expired job", extra={"job_id": job_id})
    return removed


def _resend(app: Celery, jobs: JobStore, job_id: str, recovery: Recovery) -> None:
    if recovery.step == SPLIT:
        app.send_task(SPLIT_TASK, args=[job_id])
        log.warning("job %s stalled before it was split; split re-sent", job_id, extra={"job_id": job_id})
    elif recovery.step == SCORE:
        for chunk in recovery.chunks:
            app.send_task(SCORE_TASK, args=[job_id, chunk])
        log.warning(
            "job %s stalled with %d chunks unscored; score tasks re-sent for chunks %s",
            job_id, len(recovery.chunks), list(recovery.chunks), extra={"job_id": job_id},
        )  # fmt: skip
    elif recovery.step == FINALIZE:
        # Every chunk is scored, yet the job runs on: the finalize message was lost, or the
        # scorer that claimed it died before sending it. A finalize that started after the last
        # chunk has ended by now (hard limit < stall threshold); one still waiting behind a
        # backlog finds the job finished after this one and does nothing.
        jobs.release(job_id, FINALIZE)
        if jobs.claim(job_id, FINALIZE):
            app.send_task(FINALIZE_TASK, args=[job_id])
            log.warning("job %s stalled with every chunk scored; finalize re-sent", job_id, extra={"job_id": job_id})


class Sweeper:
    """Sweeps from a daemon thread every ``job_sweep_interval_s`` until stopped.

    Before each sweep it sets the lock ``SWEEP_LOCK`` (``SET NX EX`` one interval) and sweeps
    only if it got it: one sweep per interval in the whole cluster, however many workers run,
    and a worker that dies holding the lock holds it for one interval at most.
    """

    def __init__(self, app: Celery, settings: Settings, client: redis.Redis):
        self.app = app
        self.settings = settings
        self.client = client
        self.jobs = JobStore(client, settings.job_retention_s)
        self.storage = open_storage(settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="predictq-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.client.close()

    def sweep_once(self) -> bool:
        """Sweep if no other worker swept within the interval; say whether this one did."""
        interval_s = self.settings.job_sweep_interval_s
        if not self.client.set(SWEEP_LOCK, self.owner, nx=True, ex=interval_s):
            return False
        sweep(self.app, self.jobs, self.settings.job_stall_after_s)
        remove_expired_job_files(self.jobs, self.storage, self.settings)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep_once()
            except Exception:
                # Redis or the broker away for a moment must not end recovery for the worker's
                # lifetime: say so, and try again next interval.
                log.exception("sweeping for stalled jobs failed; retrying in %s s", self.settings.job_sweep_interval_s)
            self._stop.wait(self.settings.job_sweep_interval_s)


def install_sweeper(app: Celery, settings: Settings) -> None:
    """Run a ``Sweeper`` in this worker's main process, from ``worker_ready`` to ``worker_shutdown``.

    Call in the process that starts the worker, before it starts. Pool processes never
    sweep: ``worker_ready`` is sent in the main process only, and the pid is checked too.
    """
    main_pid = os.getpid()
    running: list[Sweeper] = []

    def start(**_: object) -> None:
        if os.getpid() != main_pid or running:
            return
        # Its own Redis client: nothing the pool processes forked from this one inherit in use.
        sweeper = Sweeper(app, settings, job_store_client(settings))
        running.append(sweeper)
        sweeper.start()
        log.info(
            "sweeping for stalled jobs every %s s (stalled: no progress for %s s)",
            settings.job_sweep_interval_s, settings.job_stall_after_s,
        )  # fmt: skip

    def stop(**_: object) -> None:
        while running:
            running.pop().stop()

    worker_ready.connect(start, weak=False, dispatch_uid="predictq.sweeper.start")
    worker_shutdown.connect(stop, weak=False, dispatch_uid="predictq.sweeper.stop")

"""Job records in Redis: status, progress and outcome of batch and retrain jobs.

One hash per job. Status moves only along the allowed transitions, checked inside a
Redis transaction, so a late chunk cannot turn a cancelled job back into a running one.

A queue message can be lost for good (the Redis transport pops it before recording it as
unacknowledged, celery/kombu#305), so each active job also keeps ``progress_at``, the last
time it moved, and its id in a set of active jobs: ``lost_step`` says what a job that stopped
moving needs sent again, and the worker's sweeper sends it.

The API records on each job the id of the model store it was queued for (``store_id``,
see ``shared.store_id``); a worker that sees another store refuses the job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from shared.errors import JobNotFinished, JobNotFound, ServiceUnavailable

JobKind = Literal["batch", "retrain"]
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, RUNNING})

KEY_PREFIX = "predictq:job:"
# Job id -> when its record expires; files are only removed once the record is gone.
EXPIRY_KEY = "predictq:jobs:expiry"
# Jobs per "<kind>:<status>", moved with each record in the same transaction, so /metrics
# can report them from any process without scanning job keys.
STATS_KEY = "predictq:stats:jobs"
# Ids of queued and running jobs, kept with each status change in the same transaction, so the
# sweeper finds stalled jobs without scanning job keys.
ACTIVE_KEY = "predictq:jobs:active"
# Fields holding JSON documents rather than plain strings.
JSON_FIELDS = ("quality", "result", "options")
INT_FIELDS = ("done", "total", "chunks")
# The batch steps a sweep can send again, named as in ``claim``.
SPLIT, SCORE, FINALIZE = "split", "score", "finalize"
# Held by the one retrain that trains at a time, its value naming the job (see ``retrain_lock_job``).
# Short-lived and renewed while the fit runs, so a SIGKILLed worker's lock lapses within its TTL.
RETRAIN_LOCK = "predictq:lock:retrain"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def new_job_id() -> str:
    return uuid.uuid4().hex


REDIS_TIMEOUT_S = 5.0


def job_not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"No job {job_id!r} (unknown, or older than the retention period)")


def job_store_client(settings) -> redis.Redis:
    """The Redis holding job records, for API, workers and sweeper alike.

    Bounded, so a hung Redis fails a request, task or sweep instead of stalling it.
    """
    if not settings.redis_url:
        raise ServiceUnavailable("No queue is configured: set PREDICTQ_REDIS_URL (the local runner does it for you)")
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


class JobStore:
    """Create, read and update job records.

    Parameters
    ----------
    client : redis.Redis
        Any redis-py compatible client (``fakeredis`` in unit tests).
    retention_s : int
        How long a record lives; its files are removed with it (see ``expired_job_ids``).
    """

    def __init__(self, client: redis.Redis, retention_s: int):
        self.client = client
        self.retention_s = retention_s

    @staticmethod
    def _key(job_id: str) -> str:
        return KEY_PREFIX + job_id

    def create(self, job_id: str, kind: JobKind, **fields: Any) -> dict:
        submitted_at = now_iso()
        record = {
            "job_id": job_id, "kind": kind, "status": QUEUED, "submitted_at": submitted_at,
            "progress_at": submitted_at, "done": 0, **fields,
        }  # fmt: skip
        key = self._key(job_id)
        with self.client.pipeline() as pipe:
            pipe.hset(key, mapping=_encode(record))
            pipe.expire(key, self.retention_s)
            pipe.hincrby(STATS_KEY, _stat(kind, QUEUED), 1)
            pipe.sadd(ACTIVE_KEY, job_id)
            pipe.zadd(EXPIRY_KEY, {job_id: time.time() + self.retention_s})
            pipe.execute()
        return self.get(job_id)

    def get(self, job_id: str) -> dict:
        raw = self.client.hgetall(self._key(job_id))
        if not raw:
            raise job_not_found(job_id)
        return _decode(raw)

    def exists(self, job_id: str) -> bool:
        return bool(self.client.exists(self._key(job_id)))

    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields without touching the status; a record that has expired stays gone."""
        key = self._key(job_id)

        def set_if_alive(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(key):
                pipe.multi()
                pipe.hset(key, mapping=_encode(fields))

        self.client.transaction(set_if_alive, key)

    def transition(self, job_id: str, allowed_from: frozenset[str], to: str, **fields: Any) -> bool:
        """Move to status ``to`` if the current status is in ``allowed_from``; say whether it moved."""
        key = self._key(job_id)
        moved = False

        def attempt(pipe: redis.client.Pipeline) -> None:
            nonlocal moved
            current, kind = (v.decode() if isinstance(v, bytes) else v for v in pipe.hmget(key, "status", "kind"))
            moved = current in allowed_from
            if moved:
                pipe.multi()
                pipe.hset(key, mapping=_encode({"status": to, **fields}))
                if current != to:
                    pipe.hincrby(STATS_KEY, _stat(kind, current), -1)
                    pipe.hincrby(STATS_KEY, _stat(kind, to), 1)
                if to in FINISHED:
                    pipe.srem(ACTIVE_KEY, job_id)
                else:  # also enlists a job recorded before the set existed
                    pipe.sadd(ACTIVE_KEY, job_id)

        self.client.transaction(attempt, key)
        return moved

    def start(self, job_id: str) -> bool:
        started_at = now_iso()
        return self.transition(
            job_id, frozenset({QUEUED, RUNNING}), RUNNING, started_at=started_at, progress_at=started_at
        )

    def succeed(self, job_id: str, **fields: Any) -> bool:
        moved = self.transition(job_id, ACTIVE, SUCCEEDED, finished_at=now_iso(), **fields)
        if moved:
            with self.client.pipeline() as pipe:
                pipe.expire(self._key(job_id), self.retention_s)
                pipe.zadd(EXPIRY_KEY, {job_id: time.time() + self.retention_s})
                pipe.execute()
        return moved

    def fail(self, job_id: str, error: str) -> bool:
        return self.transition(job_id, ACTIVE, FAILED, finished_at=now_iso(), error=error)

    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job; refuse one that already finished."""
        record = self.get(job_id)
        if not self.transition(job_id, ACTIVE, CANCELLED, finished_at=now_iso()):
            raise JobNotFinished(
                f"Job {job_id} already {record['status']}; only queued or running jobs can be cancelled"
            )
        return self.get(job_id)

    def record_chunk(self, job_id: str, chunk: int, rows: int) -> int:
        """Count a scored chunk once, however often it is delivered; return chunks done."""
        key = self._key(job_id)
        chunks_key = f"{key}:chunks"

        def count_once(pipe: redis.client.Pipeline) -> None:
            # The set membership and the row count move together or not at all, and never
            # on a record that has expired meanwhile.
            if pipe.sismember(chunks_key, chunk) or not pipe.exists(key):
                return
            pipe.multi()
            pipe.sadd(chunks_key, chunk)
            pipe.expire(chunks_key, self.retention_s)
            pipe.hincrby(key, "done", rows)
            pipe.hset(key, "progress_at", now_iso())

        self.client.transaction(count_once, chunks_key, key)
        return int(self.client.scard(chunks_key))

    def chunk_done(self, job_id: str, chunk: int) -> bool:
        """Whether ``chunk`` has been scored and counted."""
        return bool(self.client.sismember(f"{self._key(job_id)}:chunks", chunk))

    def missing_chunks(self, job_id: str, chunks: int) -> list[int]:
        """Indices below ``chunks`` (the job's chunk count) not recorded as done, in order."""
        done = {int(chunk) for chunk in self.client.smembers(f"{self._key(job_id)}:chunks")}
        return [chunk for chunk in range(chunks) if chunk not in done]

    def count_delivery(self, job_id: str, step: str) -> int:
        """Count one start of ``step`` (e.g. ``"chunk 3"``) of the job; return how many there were.

        A task whose worker process dies (out of memory, SIGKILL) is delivered again by the
        broker, without end: the count lets the next delivery see how often it started before.
        """
        key = f"{self._key(job_id)}:deliveries"
        with self.client.pipeline() as pipe:
            pipe.hincrby(key, step, 1)
            pipe.expire(key, self.retention_s)
            count, _ = pipe.execute()
        return int(count)

    def claim(self, job_id: str, step: str) -> bool:
        """True for exactly one caller per (job, step): who gets to enqueue the next step."""
        key = f"{self._key(job_id)}:claim:{step}"
        return bool(self.client.set(key, "1", nx=True, ex=self.retention_s))

    def release(self, job_id: str, step: str) -> None:
        """Give up a claim whose step was lost, so the step can be claimed and sent again."""
        self.client.delete(f"{self._key(job_id)}:claim:{step}")

    def expired_job_ids(self, now: float | None = None) -> list[str]:
        """Jobs whose record has expired: their files are due for removal."""
        due = self.client.zrangebyscore(EXPIRY_KEY, "-inf", now if now is not None else time.time())
        ids = [v.decode() if isinstance(v, bytes) else v for v in due]
        # A record whose retention was extended after its entry was read is still alive.
        return [job_id for job_id in ids if not self.exists(job_id)]

    def files_removed(self, job_id: str) -> None:
        self.client.zrem(EXPIRY_KEY, job_id)

    def active_job_ids(self) -> list[str]:
        """Ids in the set of queued and running jobs (it may still hold ids of expired records)."""
        return sorted(v.decode() if isinstance(v, bytes) else v for v in self.client.smembers(ACTIVE_KEY))

    def forget(self, job_id: str) -> None:
        """Take a job that finished or expired out of the set of active jobs."""
        self.client.srem(ACTIVE_KEY, job_id)

    def touch(self, job_id: str, at: datetime | None = None) -> None:
        """Set ``progress_at`` (default: now) without creating a record that has expired meanwhile."""
        key = self._key(job_id)
        progress_at = (at or datetime.now(UTC)).isoformat()

        def attempt(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(key):
                pipe.multi()
                pipe.hset(key, "progress_at", progress_at)

        self.client.transaction(attempt, key)

    def counts(self) -> dict[tuple[str, str], int]:
        """Jobs per (kind, status). Queued and running are the jobs there now; a finished status
        counts every job that reached it, including records removed since by retention."""
        counts = {}
        for field, value in self.client.hgetall(STATS_KEY).items():
            field = field.decode() if isinstance(field, bytes) else field
            kind, _, status = field.partition(":")
            counts[(kind, status)] = int(value)
        return counts

    def require_finished(self, job_id: str) -> dict:
        record = self.get(job_id)
        if record["status"] != SUCCEEDED:
            raise JobNotFinished(f"Job {job_id} is {record['status']}; its result is available once it has succeeded")
        return record


def retrain_lock_token(job_id: str) -> str:
    """The training lock's value while ``job_id`` holds it: the job id, then a token of this holder."""
    return f"{job_id} {uuid.uuid4().hex}"


def retrain_lock_job(client: redis.Redis) -> str | None:
    """The job holding the training lock, None when no retrain holds it (or its holder died)."""
    value = client.get(RETRAIN_LOCK)
    if value is None:
        return None
    value = value.decode() if isinstance(value, bytes) else value
    return value.partition(" ")[0]


@dataclass(frozen=True)
class Recovery:
    """What a stalled batch job needs sent again: its ``split``, the ``score`` tasks of
    ``chunks``, or its ``finalize``."""

    step: str
    chunks: tuple[int, ...] = ()


def is_stalled(record: dict, now: datetime, stall_after_s: float) -> bool:
    """Whether an active job has not moved (submitted, started, a chunk scored) for ``stall_after_s``."""
    if record["status"] not in ACTIVE:
        return False
    # Records written before progress_at existed: their latest known time.
    moved = record.get("progress_at") or record.get("started_at") or record["submitted_at"]
    return (now - datetime.fromisoformat(moved)).total_seconds() > stall_after_s


def lost_step(record: dict, missing: Iterable[int]) -> Recovery | None:
    """The step of a stalled batch job whose message was lost; None for any other job.

    Parameters
    ----------
    record : dict
        The job record, as ``JobStore.get`` returns it.
    missing : iterable of int
        Chunks not recorded as done (``JobStore.missing_chunks``); ignored while the record
        has no chunk count (the job is not split yet).

    Returns
    -------
    Recovery or None
        A queued job, or a running one not yet split, lost its split; a split job lost the
        score tasks of its missing chunks, or, with none missing, its finalize. Retrain jobs
        are never re-sent (one at a time, under a lock), nor are finished ones.
    """
    if record["kind"] != "batch" or record["status"] not in ACTIVE:
        return None
    if record["status"] == QUEUED or record.get("chunks") is None:
        return Recovery(SPLIT)
    chunks = tuple(missing)
    return Recovery(SCORE, chunks) if chunks else Recovery(FINALIZE)


def _stat(kind: str | None, status: str | None) -> str:
    return f"{kind}:{status}"


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    encoded = {}
    for name, value in fields.items():
        if value is None:
            continue
        encoded[name] = json.dumps(value) if name in JSON_FIELDS else str(value)
    return encoded


def _decode(raw: dict) -> dict:
    record: dict[str, Any] = {}
    for name, value in raw.items():
        name = name.decode() if isinstance(name, bytes) else name
        value = value.decode() if isinstance(value, bytes) else value
        if name in JSON_FIELDS:
            value = json.loads(value)
        elif name in INT_FIELDS:
            value = int(value)
        record[name] = value
    return record

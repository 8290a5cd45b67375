"""Job records in Redis (fakeredis): encoding, allowed status moves, redelivery-safe counting."""

from __future__ import annotations

from datetime import UTC, datetime

import fakeredis
import pytest

from shared import jobs as jobs_module
from shared.errors import JobNotFinished, JobNotFound
from shared.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore

RETENTION_S = 3600


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def jobs(redis_client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(redis_client, RETENTION_S)


@pytest.fixture
def finished(jobs: JobStore):
    """Create a job and drive it to the named finished status."""

    def make(status: str) -> str:
        job_id = f"job-{status}"
        jobs.create(job_id, "batch")
        if status == SUCCEEDED:
            assert jobs.succeed(job_id)
        elif status == FAILED:
            assert jobs.fail(job_id, "boom")
        else:
            jobs.cancel(job_id)
        return job_id

    return make


def test_create_returns_a_queued_record_with_defaults(jobs: JobStore) -> None:
    """A new job is queued, has a submission time and done=0 as an int."""
    record = jobs.create("j1", "batch", model_version="v1")
    assert record["job_id"] == "j1"
    assert record["kind"] == "batch"
    assert record["status"] == QUEUED
    assert record["done"] == 0
    assert record["model_version"] == "v1"
    assert record["submitted_at"]


def test_get_decodes_json_and_int_fields(jobs: JobStore) -> None:
    """JSON fields come back as documents and counters as ints, not as Redis strings."""
    options = {"target": "species", "params": {"n_estimators": 20}, "activate": "never"}
    jobs.create("j1", "retrain", options=options, total=12)
    jobs.update("j1", chunks=3, quality={"island": {"unknown_category": 2}})
    record = jobs.get("j1")
    assert record["options"] == options
    assert record["quality"] == {"island": {"unknown_category": 2}}
    assert record["total"] == 12
    assert record["chunks"] == 3
    assert record["done"] == 0


def test_none_fields_are_not_stored(jobs: JobStore) -> None:
    """A field given as None is left out of the record rather than stored as the string 'None'."""
    record = jobs.create("j1", "batch", id_column=None)
    assert "id_column" not in record


def test_unknown_job_is_job_not_found(jobs: JobStore) -> None:
    """get() of an id never created raises JobNotFound naming the id."""
    with pytest.raises(JobNotFound, match="nope"):
        jobs.get("nope")


def test_exists_tells_known_from_unknown(jobs: JobStore) -> None:
    """exists() is True only for a created job."""
    jobs.create("j1", "batch")
    assert jobs.exists("j1")
    assert not jobs.exists("j2")


def test_update_does_not_change_status(jobs: JobStore) -> None:
    """update() sets progress fields and leaves the status alone."""
    jobs.create("j1", "batch")
    jobs.update("j1", total=10, chunk_rows=5)
    record = jobs.get("j1")
    assert record["status"] == QUEUED
    assert record["total"] == 10


def test_queued_job_runs_then_succeeds(jobs: JobStore) -> None:
    """queued -> running -> succeeded, with start and finish times and the outcome fields."""
    jobs.create("j1", "batch")
    assert jobs.start("j1")
    running = jobs.get("j1")
    assert running["status"] == RUNNING
    assert running["started_at"]
    assert jobs.succeed("j1", quality={"sex": {"missing": 1}})
    done = jobs.get("j1")
    assert done["status"] == SUCCEEDED
    assert done["finished_at"]
    assert done["quality"] == {"sex": {"missing": 1}}


def test_start_again_while_running_is_allowed(jobs: JobStore) -> None:
    """A redelivered split task may start a running job again without error."""
    jobs.create("j1", "batch")
    assert jobs.start("j1")
    assert jobs.start("j1")
    assert jobs.get("j1")["status"] == RUNNING


def test_cancelled_job_cannot_be_started_or_succeeded(jobs: JobStore) -> None:
    """A late task cannot turn a cancelled job back into running or succeeded."""
    jobs.create("j1", "batch")
    assert jobs.cancel("j1")["status"] == CANCELLED
    assert not jobs.start("j1")
    assert not jobs.succeed("j1", quality={})
    record = jobs.get("j1")
    assert record["status"] == CANCELLED
    assert "quality" not in record


def test_cancel_of_running_job_is_allowed(jobs: JobStore) -> None:
    """A running job can be cancelled and records when."""
    jobs.create("j1", "batch")
    jobs.start("j1")
    record = jobs.cancel("j1")
    assert record["status"] == CANCELLED
    assert record["finished_at"]


@pytest.mark.parametrize("start_first", [False, True], ids=["queued", "running"])
def test_fail_from_an_active_state(jobs: JobStore, start_first: bool) -> None:
    """fail() moves a queued or running job to failed and keeps the error text."""
    jobs.create("j1", "batch")
    if start_first:
        jobs.start("j1")
    assert jobs.fail("j1", "chunk 3 failed")
    record = jobs.get("j1")
    assert record["status"] == FAILED
    assert record["error"] == "chunk 3 failed"


@pytest.mark.parametrize("status", [SUCCEEDED, CANCELLED, FAILED])
def test_fail_does_not_touch_a_finished_job(jobs: JobStore, finished, status: str) -> None:
    """fail() on a succeeded, cancelled or already failed job returns False and changes nothing."""
    job_id = finished(status)
    before = jobs.get(job_id)
    assert not jobs.fail(job_id, "too late")
    assert jobs.get(job_id) == before


@pytest.mark.parametrize("status", [SUCCEEDED, CANCELLED, FAILED])
def test_cancel_of_a_finished_job_is_refused(jobs: JobStore, finished, status: str) -> None:
    """cancel() on a finished job raises JobNotFinished naming its status, and the status stays."""
    job_id = finished(status)
    with pytest.raises(JobNotFinished, match=f"already {status}"):
        jobs.cancel(job_id)
    assert jobs.get(job_id)["status"] == status


def test_cancel_of_unknown_job_is_job_not_found(jobs: JobStore) -> None:
    """cancel() of an unknown id is JobNotFound, not JobNotFinished."""
    with pytest.raises(JobNotFound):
        jobs.cancel("nope")


def test_transition_of_unknown_job_does_not_create_it(jobs: JobStore) -> None:
    """start() of a job that expired or never existed reports False and leaves no record behind."""
    assert not jobs.start("gone")
    assert not jobs.exists("gone")


def test_record_chunk_counts_each_chunk_once(jobs: JobStore) -> None:
    """A redelivered chunk adds its rows once; the return value counts distinct chunks."""
    jobs.create("j1", "batch", total=25, chunks=3)
    assert jobs.record_chunk("j1", 0, 10) == 1
    assert jobs.record_chunk("j1", 0, 10) == 1
    assert jobs.record_chunk("j1", 1, 10) == 2
    assert jobs.record_chunk("j1", 0, 10) == 2
    assert jobs.record_chunk("j1", 2, 5) == 3
    assert jobs.record_chunk("j1", 2, 5) == 3
    assert jobs.get("j1")["done"] == 25


def test_claim_is_granted_once_per_job_and_step(jobs: JobStore) -> None:
    """Only the first claim of (job, step) wins; other steps and other jobs are separate."""
    assert jobs.claim("j1", "finalize") is True
    assert jobs.claim("j1", "finalize") is False
    assert jobs.claim("j1", "finalize") is False
    assert jobs.claim("j1", "other") is True
    assert jobs.claim("j2", "finalize") is True


def test_create_sets_retention_ttl(jobs: JobStore, redis_client: fakeredis.FakeRedis) -> None:
    """A job record expires after the retention period instead of living forever."""
    jobs.create("j1", "batch")
    assert 0 < redis_client.ttl("predictq:job:j1") <= RETENTION_S


def test_succeed_renews_retention_ttl(jobs: JobStore, redis_client: fakeredis.FakeRedis) -> None:
    """Success restarts the retention clock, so a result is kept for the full period."""
    jobs.create("j1", "batch")
    redis_client.expire("predictq:job:j1", 10)
    jobs.succeed("j1")
    assert redis_client.ttl("predictq:job:j1") > 10


def test_chunk_set_and_claims_expire(jobs: JobStore, redis_client: fakeredis.FakeRedis) -> None:
    """The helper keys of a job (chunks seen, claims) expire too, so nothing is left behind."""
    jobs.create("j1", "batch")
    jobs.record_chunk("j1", 0, 3)
    jobs.claim("j1", "finalize")
    assert 0 < redis_client.ttl("predictq:job:j1:chunks") <= RETENTION_S
    assert 0 < redis_client.ttl("predictq:job:j1:claim:finalize") <= RETENTION_S


def test_require_finished_refuses_unfinished_and_returns_succeeded(jobs: JobStore) -> None:
    """The result of a job is available only once it succeeded."""
    jobs.create("j1", "batch")
    with pytest.raises(JobNotFinished, match="queued"):
        jobs.require_finished("j1")
    jobs.succeed("j1")
    assert jobs.require_finished("j1")["status"] == SUCCEEDED


def test_counts_follow_creation_and_each_status_move(jobs: JobStore) -> None:
    """counts() has queued and running jobs as they are now, and one count per finished job and status."""
    for job_id in ("b1", "b2", "b3", "b4"):
        jobs.create(job_id, "batch")
    jobs.create("r1", "retrain")
    jobs.start("b1")
    jobs.start("b1")  # a redelivered task starts a running job again: no double count
    assert jobs.succeed("b1")
    jobs.start("b2")
    jobs.cancel("b3")
    assert not jobs.succeed("b3")  # refused: nothing moves

    assert jobs.counts() == {
        ("batch", QUEUED): 1,
        ("batch", RUNNING): 1,
        ("batch", SUCCEEDED): 1,
        ("batch", CANCELLED): 1,
        ("retrain", QUEUED): 1,
    }


# --- what the sweeper reads ----------------------------------------------------------------


def test_active_set_follows_creation_and_finishing(jobs: JobStore, finished) -> None:
    """A job is in the active set from creation while queued or running, and leaves it when it finishes."""
    jobs.create("queued", "batch")
    jobs.create("running", "batch")
    jobs.start("running")
    done = [finished(status) for status in (SUCCEEDED, FAILED, CANCELLED)]

    assert jobs.active_job_ids() == ["queued", "running"]
    assert not set(done) & set(jobs.active_job_ids())
    jobs.forget("queued")
    assert jobs.active_job_ids() == ["running"]


def test_progress_at_moves_on_submission_start_and_new_chunks(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """progress_at is the submission time, then the start, then the latest newly counted chunk."""
    monkeypatch.setattr(jobs_module, "now_iso", lambda: "2030-01-01T00:00:00+00:00")
    jobs.create("j1", "batch")
    assert jobs.get("j1")["progress_at"] == "2030-01-01T00:00:00+00:00"
    monkeypatch.setattr(jobs_module, "now_iso", lambda: "2030-01-01T00:01:00+00:00")
    jobs.start("j1")
    assert jobs.get("j1")["progress_at"] == "2030-01-01T00:01:00+00:00"
    monkeypatch.setattr(jobs_module, "now_iso", lambda: "2030-01-01T00:02:00+00:00")
    jobs.record_chunk("j1", 0, 10)
    assert jobs.get("j1")["progress_at"] == "2030-01-01T00:02:00+00:00"
    monkeypatch.setattr(jobs_module, "now_iso", lambda: "2030-01-01T00:03:00+00:00")
    jobs.record_chunk("j1", 0, 10)  # counted already: not progress
    assert jobs.get("j1")["progress_at"] == "2030-01-01T00:02:00+00:00"


def test_missing_chunks_are_those_not_recorded(jobs: JobStore) -> None:
    """missing_chunks lists, in order, the indices below the chunk count that were never recorded."""
    jobs.create("j1", "batch")
    assert jobs.missing_chunks("j1", 4) == [0, 1, 2, 3]
    jobs.record_chunk("j1", 2, 10)
    jobs.record_chunk("j1", 0, 10)
    assert jobs.missing_chunks("j1", 4) == [1, 3]
    assert jobs.chunk_done("j1", 2)
    assert not jobs.chunk_done("j1", 1)
    for chunk in (1, 3):
        jobs.record_chunk("j1", chunk, 10)
    assert jobs.missing_chunks("j1", 4) == []


def test_touch_never_recreates_an_expired_record(jobs: JobStore) -> None:
    """touch() sets progress_at on a live record and leaves no partial record for an expired one."""
    jobs.create("j1", "batch")
    jobs.touch("j1", datetime(2030, 1, 1, tzinfo=UTC))
    assert jobs.get("j1")["progress_at"] == "2030-01-01T00:00:00+00:00"
    jobs.touch("gone")
    assert not jobs.exists("gone")


def test_released_claim_can_be_claimed_again(jobs: JobStore) -> None:
    """release() gives a lost step's claim back, once; the next claim wins it."""
    assert jobs.claim("j1", "finalize")
    jobs.release("j1", "finalize")
    assert jobs.claim("j1", "finalize")
    assert not jobs.claim("j1", "finalize")


def test_deliveries_are_counted_per_step_outside_the_record(jobs: JobStore, redis_client: fakeredis.FakeRedis) -> None:
    """Each step of a job counts its own starts; the counts live beside the record (not in GET /jobs),
    and expire with it."""
    jobs.create("j1", "batch")

    assert [jobs.count_delivery("j1", "chunk 3") for _ in range(3)] == [1, 2, 3]
    assert jobs.count_delivery("j1", "chunk 4") == 1
    assert jobs.count_delivery("j1", "joining the results") == 1

    assert not any(name.startswith("deliveries") or name.startswith("chunk") for name in jobs.get("j1"))
    assert 0 < redis_client.ttl("predictq:job:j1:deliveries") <= RETENTION_S


def test_the_training_lock_names_the_job_holding_it(redis_client: fakeredis.FakeRedis) -> None:
    """The lock's value starts with the holder's job id; no lock, no holder."""
    assert jobs_module.retrain_lock_job(redis_client) is None
    token = jobs_module.retrain_lock_token("r1")
    assert token != jobs_module.retrain_lock_token("r1")  # each holder its own token
    redis_client.set(jobs_module.RETRAIN_LOCK, token)
    assert jobs_module.retrain_lock_job(redis_client) == "r1"

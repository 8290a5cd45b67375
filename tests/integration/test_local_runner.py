"""`predictq up`: embedded Redis, worker and API from one command, stopped by Ctrl-C, data kept across restarts."""

from __future__ import annotations

import json
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

pytestmark = pytest.mark.integration

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
JOB_TIMEOUT_S = 60.0
ROWS = 12


@dataclass
class FirstRun:
    """What one `predictq up` session did, from start to Ctrl-C."""

    data_dir: Path
    ready: dict
    submitted: dict
    job: dict
    result: dict | None
    token_mode: int | None
    children: set[int]
    exit_code: int | None
    stop_s: float
    survivors: set[int]
    output: str


def wait_for_http_job(status_url: str, output) -> dict:
    """Poll a job's status_url until it finishes; fail with the record and the runner's output."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        record = requests.get(status_url, timeout=5).json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"job still {record['status']} after {JOB_TIMEOUT_S} s:\n{json.dumps(record)}\n{output()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def first_run(local_stacks, tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    """Start `predictq up` on a fresh data dir, run a JSON job over HTTP, then Ctrl-C it."""
    data_dir = tmp_path_factory.mktemp("local") / "var"
    stack = local_stacks.start(data_dir)
    ready = stack.wait_ready()
    rows = pd.read_csv(PENGUINS_CSV).drop(columns="species").head(ROWS)
    response = requests.post(f"{stack.url}/jobs", json={"instances": json.loads(rows.to_json(orient="records"))})
    assert response.status_code == 202, response.text
    submitted = response.json()
    job = wait_for_http_job(submitted["status_url"], stack.output)
    result = requests.get(job["result_url"], timeout=10).json() if job["status"] == "succeeded" else None
    token_file = data_dir / "admin_token"
    token_mode = stat.S_IMODE(token_file.stat().st_mode) if token_file.exists() else None
    children = stack.processes()

    started = time.monotonic()
    exit_code, survivors = stack.interrupt()
    return FirstRun(
        data_dir=data_dir,
        ready=ready,
        submitted=submitted,
        job=job,
        result=result,
        token_mode=token_mode,
        children=children,
        exit_code=exit_code,
        stop_s=time.monotonic() - started,
        survivors=survivors,
        output=stack.output(),
    )


def test_up_serves_a_json_job_over_http(first_run: FirstRun) -> None:
    """Once /readyz answers, a JSON job posted over HTTP runs on the stack's own worker and Redis."""
    assert first_run.submitted["status"] == "queued"
    assert first_run.job["status"] == "succeeded", first_run.job
    assert first_run.job["progress"] == {"done": ROWS, "total": ROWS}
    assert first_run.job["model_version"] == first_run.ready["model_version"]
    assert first_run.result is not None
    assert len(first_run.result["predictions"]) == ROWS


def test_up_writes_the_admin_token_readable_by_its_owner_only(first_run: FirstRun) -> None:
    """The first start writes data_dir/admin_token with mode 0600."""
    assert first_run.token_mode == 0o600


def test_ctrl_c_stops_the_runner_and_every_child(first_run: FirstRun) -> None:
    """SIGINT makes the runner exit 0 within 10 s, and Redis, worker, API and their children are gone."""
    assert first_run.exit_code == 0, first_run.output[-4000:]
    assert first_run.stop_s < 10, first_run.output[-4000:]
    # Redis, the worker with its pool, gunicorn with its worker.
    assert len(first_run.children) >= 5, first_run.children
    assert not first_run.survivors, f"still running after Ctrl-C: {first_run.survivors}"


def test_ctrl_c_stops_api_and_worker_before_redis(first_run: FirstRun) -> None:
    """Ctrl-C stops the API and the worker first, and Redis, which they use until then, last."""
    stopped = {name: first_run.output.find(f"predictq: {name} stopped") for name in ("api", "worker", "redis")}
    assert -1 not in stopped.values(), first_run.output[-4000:]
    assert stopped["redis"] > max(stopped["api"], stopped["worker"]), first_run.output[-4000:]


def test_up_output_is_prefixed_per_process(first_run: FirstRun) -> None:
    """Each child's lines appear in the runner's output prefixed with its name."""
    for name in ("redis", "worker", "api"):
        assert re.search(rf"^\s*{name} \| ", first_run.output, re.MULTILINE), f"no '{name} |' lines"


def test_restart_on_the_same_data_dir_keeps_jobs_and_models(first_run: FirstRun, local_stacks) -> None:
    """A second `predictq up` on the same data dir still has the first job (Redis AOF) and the same model."""
    assert first_run.job["status"] == "succeeded", "the first run's job did not succeed"

    stack = local_stacks.start(first_run.data_dir)
    ready = stack.wait_ready()

    job = requests.get(f"{stack.url}/jobs/{first_run.job['job_id']}", timeout=5).json()
    assert job["status"] == "succeeded", job
    assert job["submitted_at"] == first_run.job["submitted_at"]
    assert job["finished_at"] == first_run.job["finished_at"]
    assert requests.get(job["result_url"], timeout=10).json() == first_run.result
    assert ready["model_version"] == first_run.ready["model_version"]
    models = requests.get(f"{stack.url}/models", timeout=5).json()
    assert [m["version"] for m in models["models"]] == [first_run.ready["model_version"]]
    exit_code, survivors = stack.interrupt()
    assert exit_code == 0 and not survivors

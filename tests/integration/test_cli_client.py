"""The client commands (`predictq predict`, `jobs`, `retrain`, `models`) against a real `predictq up` stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests
from click.testing import CliRunner, Result
from readiness import wait_for_ready

from predictq.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PENGUINS_CSV = REPO / "data" / "penguins.csv"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
HTTP_TIMEOUT_S = 30
# Small, so a file of a hundred rows is already too many for POST /predict.
SYNC_MAX_ROWS = 50
# What each command may wait for a job (passed as --timeout): fails the test rather than hanging it.
WAIT_S = "120"
FAST_FOREST = ("--estimator", "random_forest", "--param", "n_estimators=10")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    workdir: Path
    url: str

    def get(self, path: str) -> dict:
        response = requests.get(f"{self.url}{path}", timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        return response.json()

    def post_predict(self, instances: list[dict]) -> dict:
        response = requests.post(f"{self.url}/predict", json={"instances": instances}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        return response.json()

    def active_version(self) -> str:
        return self.get("/models")["active_version"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`predictq up` (embedded Redis, one worker, the API) in a fresh working directory."""
    workdir = tmp_path_factory.mktemp("client")
    shutil.copytree(REPO / "data", workdir / "data")
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREDICTQ_")}
    env.update(
        PREDICTQ_PORT=str(port),
        PREDICTQ_LOCAL_REDIS_PORT=str(_free_port()),
        PREDICTQ_API_WORKERS="1",
        PREDICTQ_WORKER_CONCURRENCY="1",
        PREDICTQ_SYNC_MAX_ROWS=str(SYNC_MAX_ROWS),
        PREDICTQ_MODEL_CHECK_INTERVAL_S="0",
    )
    log = open(workdir / "stack.log", "w")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "predictq.cli", "up"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready(url, START_TIMEOUT_S, process=process, log_path=workdir / "stack.log")
    except BaseException:
        process.send_signal(signal.SIGINT)
        process.wait(STOP_TIMEOUT_S)
        log.close()
        raise
    yield Stack(workdir, url)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def predictq(stack: Stack) -> Callable[..., Result]:
    """Run `predictq <args>` in this process; the token comes from the stack's data dir, as on the stack's machine."""
    runner = CliRunner(
        env={
            "PREDICTQ_URL": stack.url,
            "PREDICTQ_DATA_DIR": str(stack.workdir / "var"),
            "PREDICTQ_TOKEN": None,
            "PREDICTQ_ADMIN_TOKEN": None,
        }
    )
    return lambda *args: runner.invoke(main, [str(arg) for arg in args])


def penguin_rows(count: int) -> pd.DataFrame:
    """``count`` demo rows (repeated as needed) without the target, each with a ``penguin_id``."""
    table = pd.read_csv(PENGUINS_CSV).drop(columns="species")
    rows = table.iloc[[i % len(table) for i in range(count)]].reset_index(drop=True)
    rows.insert(0, "penguin_id", [f"p{i:05d}" for i in range(count)])
    return rows


def write_rows(path: Path, count: int) -> pd.DataFrame:
    rows = penguin_rows(count)
    rows.to_csv(path, index=False)
    return pd.read_csv(path, dtype={"penguin_id": str})


def instances(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON objects for POST /predict: features only, missing values as null."""
    features = frame.drop(columns="penguin_id", errors="ignore")
    return features.astype(object).where(features.notna(), None).to_dict("records")


def direct_predictions(stack: Stack, rows: pd.DataFrame) -> list:
    """POST /predict on the rows, at most SYNC_MAX_ROWS at a time."""
    labels = []
    for start in range(0, len(rows), SYNC_MAX_ROWS):
        labels += stack.post_predict(instances(rows.iloc[start : start + SYNC_MAX_ROWS]))["predictions"]
    return labels


def test_predict_small_file_writes_what_post_predict_answers(
    stack: Stack, predictq: Callable[..., Result], tmp_path: Path
) -> None:
    """A file within the sync limit gives a CSV whose predictions and probabilities are POST /predict's."""
    rows = write_rows(tmp_path / "rows.csv", 20)
    out = tmp_path / "out.csv"

    result = predictq("predict", "--file", tmp_path / "rows.csv", "--id-column", "penguin_id", "-o", out)

    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, dtype={"penguin_id": str})
    direct = stack.post_predict(instances(rows))
    assert written["penguin_id"].tolist() == rows["penguin_id"].tolist()
    assert written["prediction"].tolist() == direct["predictions"]
    for label in ("Adelie", "Chinstrap", "Gentoo"):
        assert written[f"probability_{label}"].tolist() == pytest.approx([p[label] for p in direct["probabilities"]])
    assert "queued as job" not in result.stderr


def test_predict_json_file_prints_the_predict_answer(
    stack: Stack, predictq: Callable[..., Result], tmp_path: Path
) -> None:
    """A JSON file of rows is sent as it is; --format json prints /predict's answer on stdout."""
    sent = instances(penguin_rows(3))
    (tmp_path / "rows.json").write_text(json.dumps({"instances": sent}))

    result = predictq("predict", "--file", tmp_path / "rows.json", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["predictions"] == stack.post_predict(sent)["predictions"]


def test_predict_over_the_sync_limit_goes_through_a_job(
    stack: Stack, predictq: Callable[..., Result], tmp_path: Path
) -> None:
    """Over the server's PREDICTQ_SYNC_MAX_ROWS the rows run as a job; every row is written, ids in order."""
    rows = write_rows(tmp_path / "rows.csv", 3 * SYNC_MAX_ROWS + 7)
    out = tmp_path / "out.csv"

    result = predictq(
        "predict", "-f", tmp_path / "rows.csv", "--id-column", "penguin_id", "-o", out, "--timeout", WAIT_S
    )

    assert result.exit_code == 0, result.output
    assert "over the server's limit for /predict; queued as job" in result.stderr
    written = pd.read_csv(out, dtype={"penguin_id": str})
    assert written["penguin_id"].tolist() == rows["penguin_id"].tolist()
    assert written["prediction"].tolist() == direct_predictions(stack, rows)


def test_predict_large_file_is_uploaded_as_a_csv_job(
    stack: Stack, predictq: Callable[..., Result], tmp_path: Path
) -> None:
    """More than 1000 rows: the file itself is uploaded to /jobs and the job's CSV result written."""
    rows = write_rows(tmp_path / "rows.csv", 1200)
    out = tmp_path / "out.csv"

    result = predictq(
        "predict", "-f", tmp_path / "rows.csv", "--id-column", "penguin_id", "-o", out, "--timeout", WAIT_S
    )

    assert result.exit_code == 0, result.output
    assert "more than 1000 rows: submitted as job" in result.stderr
    written = pd.read_csv(out, dtype={"penguin_id": str})
    assert written["penguin_id"].tolist() == rows["penguin_id"].tolist()
    assert written["prediction"].notna().all()
    assert {"probability_Adelie", "probability_Chinstrap", "probability_Gentoo"} <= set(written.columns)


def test_jobs_submit_wait_then_status_and_result(stack: Stack, predictq: Callable[..., Result], tmp_path: Path) -> None:
    """`jobs submit --wait` prints the id; `jobs status` says succeeded; `jobs result -o` writes CSV and JSON."""
    rows = write_rows(tmp_path / "rows.csv", 30)

    submitted = predictq(
        "jobs", "submit", tmp_path / "rows.csv", "--id-column", "penguin_id", "--wait", "--timeout", WAIT_S
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert f"job {job_id} succeeded: 30 rows" in submitted.stderr

    status = predictq("jobs", "status", job_id)
    assert status.exit_code == 0, status.output
    assert "status     succeeded" in status.stdout and "progress   30/30 rows" in status.stdout

    assert predictq("jobs", "result", job_id, "-o", tmp_path / "result.csv").exit_code == 0
    assert predictq("jobs", "result", job_id, "-o", tmp_path / "result.json").exit_code == 0
    csv_result = pd.read_csv(tmp_path / "result.csv", dtype={"penguin_id": str})
    json_result = json.loads((tmp_path / "result.json").read_text())
    assert csv_result["penguin_id"].tolist() == json_result["ids"] == rows["penguin_id"].tolist()
    assert csv_result["prediction"].tolist() == json_result["predictions"] == direct_predictions(stack, rows)

    cancelled = predictq("jobs", "cancel", job_id)
    assert cancelled.exit_code == 1
    assert cancelled.stderr.startswith(f"error 409 Job not finished: Job {job_id} already succeeded")


def test_jobs_submit_output_waits_and_writes_the_result(predictq: Callable[..., Result], tmp_path: Path) -> None:
    """-o implies --wait: the result is written once the job has succeeded."""
    write_rows(tmp_path / "rows.csv", 12)

    result = predictq("jobs", "submit", tmp_path / "rows.csv", "-o", tmp_path / "out.csv", "--timeout", WAIT_S)

    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "out.csv")) == 12


def test_status_of_an_unknown_job_is_a_readable_404(predictq: Callable[..., Result]) -> None:
    """An unknown job id prints the 404 problem on one line and exits 1."""
    result = predictq("jobs", "status", "no-such-job")

    assert result.exit_code == 1
    assert (
        result.stderr == "error 404 Job not found: No job 'no-such-job' (unknown, or older than the retention period)\n"
    )


def test_a_file_that_fails_the_schema_prints_row_and_field(predictq: Callable[..., Result], tmp_path: Path) -> None:
    """A 422 shows its detail, then one line per faulty value naming row and field."""
    rows = penguin_rows(3).drop(columns="penguin_id")
    rows["bill_length_mm"] = rows["bill_length_mm"].astype(object)
    rows.loc[1, "bill_length_mm"] = "long"
    rows.to_csv(tmp_path / "bad.csv", index=False)

    result = predictq("predict", "--file", tmp_path / "bad.csv")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error 422 Invalid input: 1 value(s) do not fit the model's schema",
        "  row 1, field bill_length_mm: expected a number, got 'long'",
    ]


def test_retrain_never_reports_not_promoted_with_the_reason(stack: Stack, predictq: Callable[..., Result]) -> None:
    """`retrain --activate never --wait` trains a version, keeps the active one, and says why."""
    active = stack.active_version()

    result = predictq("retrain", *FAST_FOREST, "--activate", "never", "--wait", "--timeout", WAIT_S)

    assert result.exit_code == 0, result.output
    job_id, decision, reason = result.stdout.splitlines()[:3]
    assert decision.startswith("not promoted: version ") and decision.endswith(f"; {active} stays active")
    assert reason == "reason: activation not requested (activate=never)"
    assert stack.get(f"/jobs/{job_id}")["status"] == "succeeded"
    assert stack.active_version() == active


def test_retrain_upload_promotes_then_models_activate_rolls_back(stack: Stack, predictq: Callable[..., Result]) -> None:
    """An uploaded file trained with --activate always becomes active; `models activate` restores the old one."""
    before = stack.active_version()

    trained = predictq(
        "retrain", "--file", PENGUINS_CSV, "--target", "species", *FAST_FOREST, "--activate", "always", "--wait"
    )
    assert trained.exit_code == 0, trained.output
    decision = trained.stdout.splitlines()[1]
    assert decision.startswith("promoted: version ") and decision.endswith(" is now active")
    assert "reason: activation requested (activate=always)" in trained.stdout
    new = decision.split()[2]

    listed = predictq("models", "list")
    assert listed.exit_code == 0, listed.output
    marked = [line.split()[1] for line in listed.stdout.splitlines() if line.startswith("*")]
    assert marked == [new]

    rolled = predictq("models", "activate", before)
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout == f"active version: {before}\n"
    assert [line.split()[1] for line in predictq("models", "list").stdout.splitlines() if line.startswith("*")] == [
        before
    ]
    assert stack.get("/readyz")["model_version"] == before


def test_a_wrong_token_is_refused_with_a_hint(predictq: Callable[..., Result]) -> None:
    """Activation with a wrong token is a 401 that says where the token comes from."""
    result = predictq("models", "activate", "anything", "--token", "wrong")

    assert result.exit_code == 1
    assert result.stderr.startswith("error 401 Unauthorized:")
    assert "hint: pass --token or set PREDICTQ_TOKEN" in result.stderr


def test_connection_refused_names_the_url_and_make_run() -> None:
    """With nothing listening, the message names the URL and suggests `make run`; exit 1."""
    url = f"http://127.0.0.1:{_free_port()}"

    result = CliRunner().invoke(main, ["models", "list", "--url", url])

    assert result.exit_code == 1
    assert f"cannot connect to predictq at {url} (connection refused)" in result.stderr
    assert "Start it with `make run`" in result.stderr

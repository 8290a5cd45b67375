"""Integration fixtures: a real Redis server, real Celery worker processes, models trained by the real code.

Nothing here is mocked. The API runs in-process (Flask test client) against the same Redis
and data directory as the worker subprocesses, so a job goes through the real broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from process_tree import children_of, command_line, descendants, group_members, kill_pids, start_time, wait_until_gone
from readiness import wait_for_ready

from api import create_app
from predictq.redis_server import free_port, start_server
from shared.compiled import PARITY_TOLERANCE
from shared.inputs import prepare
from shared.jobs import FINISHED
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.training import TrainingOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
PENGUINS_CSV = REPO_ROOT / "data" / "penguins.csv"
TARGET = "species"
# Enough trees for stable probabilities, few enough that training takes a fraction of a second.
FAST_FOREST = {"n_estimators": 20}
ADMIN_TOKEN = "integration-admin-token"

WORKER_READY_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.05
STACK_READY_TIMEOUT_S = 120.0
# The runner stops everything within 10 s; the rest is room for a loaded machine.
STACK_STOP_TIMEOUT_S = 30.0


# --- processes -----------------------------------------------------------------------------


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Signal, wait with a bound, then kill: a process started by a fixture never outlives it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)


def child_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """The test's environment without PREDICTQ_* variables, plus ``settings`` as PREDICTQ_* variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREDICTQ_")}
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the capture file as they are written
    if settings is not None:
        for name, value in settings.model_dump(mode="json").items():
            if isinstance(value, bool):
                env[f"PREDICTQ_{name.upper()}"] = str(value).lower()
            elif isinstance(value, (dict, list)):
                env[f"PREDICTQ_{name.upper()}"] = json.dumps(value)
            elif value is not None:
                env[f"PREDICTQ_{name.upper()}"] = str(value)
    env.update(extra)
    return env


class WorkerProcess:
    """One ``predictq worker`` subprocess in its own session (so its pool children share its group)."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: Path):
        self.name = name
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not re.search(rf"{re.escape(self.name)}@\S+ ready\.", self.log()):
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode} before ready:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker {self.name} not ready within {timeout_s} s:\n{self.log()}")
            time.sleep(POLL_S)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as a crash or the OOM killer would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        left = wait_until_gone(group_members(self.process.pid), STOP_TIMEOUT_S)
        assert not left, f"processes of worker {self.name} survived SIGKILL: {left}"

    def stop(self) -> None:
        """Warm shutdown (SIGTERM to the main process), then SIGKILL whatever is left of the group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)  # a test may have left it frozen
        stop_process(self.process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        wait_until_gone(group_members(self.process.pid), STOP_TIMEOUT_S)


class Workers:
    """Starts worker subprocesses for one test and stops every one of them at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, *, concurrency: int = 2) -> WorkerProcess:
        """Start ``predictq worker`` configured by ``settings`` and wait until it consumes."""
        name = f"worker-{len(self.started) + 1}"
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "predictq.cli",
                    "worker",
                    f"--concurrency={concurrency}",
                    f"--hostname={name}@%h",
                ],
                cwd=REPO_ROOT,
                env=child_env(settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(name, process, log_path)
        self.started.append(worker)
        worker.wait_ready()
        return worker

    def logs(self) -> str:
        if not self.started:
            return "(no worker was started)"
        return "\n".join(f"----- {w.name} log ({w.log_path}) -----\n{w.log()}" for w in self.started)

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


def _role(argv: list[str]) -> str | None:
    """Which child of ``predictq up`` a command line is (the server rewrites its own title)."""
    if argv[1:4] == ["-m", "predictq.cli", "worker"]:
        return "worker"
    if argv[1:3] == ["-m", "gunicorn"]:
        return "api"
    if any(name in argv[0] for name in ("redis-server", "valkey-server")):
        return "redis"
    return None


class LocalStack:
    """One ``predictq up`` runner subprocess with its output captured to a file."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, data_dir: Path):
        self.process = process
        self.port = port
        self.log_path = log_path
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        # Every process seen below the runner, by pid and start time: teardown ends those still
        # alive even when the runner itself is gone (a test may SIGKILL it).
        self.seen: dict[int, int | None] = {}

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = STACK_READY_TIMEOUT_S) -> dict:
        """Poll GET /readyz over HTTP until it answers 200; return its body."""
        return wait_for_ready(self.url, timeout_s, process=self.process, log_path=self.log_path)

    def processes(self) -> set[int]:
        """Every live process the runner started, and theirs (gunicorn and Celery pool children)."""
        tree = descendants(self.process.pid)
        self.seen.update({pid: start_time(pid) for pid in tree})
        return tree

    def child(self, name: str) -> int | None:
        """The pid of the runner's own child ``name`` (redis, worker or api), None while there is none."""
        for pid in children_of(self.process.pid):
            if _role(command_line(pid)) == name:
                self.seen[pid] = start_time(pid)
                return pid
        return None

    def wait_for_output(self, text: str, timeout_s: float) -> None:
        """Wait until the runner has written ``text``; fail with its output if it does not."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if time.monotonic() > deadline:
                pytest.fail(f"the runner did not write {text!r} within {timeout_s} s:\n{self.output()[-4000:]}")
            time.sleep(POLL_S)

    def interrupt(self, timeout_s: float = STACK_STOP_TIMEOUT_S) -> tuple[int | None, set[int]]:
        """Ctrl-C the runner; return its exit code (None if still running) and its processes still alive."""
        tree = descendants(self.process.pid)
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        return code, wait_until_gone(tree, STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Ctrl-C, wait with a bound, then kill the runner and everything it started."""
        if self.process.poll() is None:
            self.processes()
            stop_process(self.process, signal.SIGINT, STACK_STOP_TIMEOUT_S)
        left = wait_until_gone(set(self.seen), STOP_TIMEOUT_S)
        kill_pids({pid: self.seen[pid] for pid in left})


class LocalStacks:
    """Starts ``predictq up`` runners on free ports; every one is stopped at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[LocalStack] = []

    def start(self, data_dir: Path, **env: str) -> LocalStack:
        """Start ``predictq up`` on ``data_dir`` (its embedded Redis on a socket there); ``env`` adds variables."""
        port = free_port()
        env = child_env(
            PREDICTQ_DATA_DIR=str(data_dir),
            PREDICTQ_PORT=str(port),
            PREDICTQ_DATASET_PATH=str(PENGUINS_CSV),
            PREDICTQ_API_WORKERS="1",
            PREDICTQ_WORKER_CONCURRENCY="1",
            **env,
        )
        log_path = self.log_dir / f"up-{len(self.started) + 1}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "predictq.cli", "up"],
                cwd=self.log_dir,  # nothing relative lands in the repository
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is what the test sends, not what the terminal sends
            )
        stack = LocalStack(process, port, log_path, data_dir)
        self.started.append(stack)
        return stack

    def stop_all(self) -> None:
        for stack in self.started:
            stack.stop()


# --- Redis, models, settings ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_predictq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here come from the test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("PREDICTQ_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Redis-compatible server for the session, on a free loopback port in a tmp dir."""
    directory = tmp_path_factory.mktemp("redis")
    with open(directory / "server.log", "wb") as log:
        process, url = start_server(directory, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield url
        finally:
            stop_process(process)


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server in its own process on a free loopback port (it takes any credentials)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/moto-api/", timeout=2).ok:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(POLL_S)
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session server, emptied first: no job, queued message or lock leaks from the test before."""
    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def model_store(data_dir: Path) -> ModelStore:
    return ModelStore(LocalStorage(data_dir))


@pytest.fixture
def trained_version(model_store: ModelStore) -> str:
    """A small random forest on the demo table, trained and activated through the real code."""
    options = TrainingOptions(target=TARGET, estimator="random_forest", params=FAST_FOREST)
    return train_version(model_store, PENGUINS_CSV, options)["version"]


@pytest.fixture
def settings(data_dir: Path, redis_url: str) -> Settings:
    """Small chunks so a batch splits into several; a model swap is seen on the next request."""
    return Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        dataset_path=PENGUINS_CSV,
        dataset_target=TARGET,
        job_chunk_rows=4,
        sync_max_rows=10,
        model_check_interval_s=0,
        admin_token=ADMIN_TOKEN,
    )


# --- API, workers, waiting -----------------------------------------------------------------


@pytest.fixture
def make_app(redis_url: str) -> Iterator[Callable[[Settings], Flask]]:
    """Build API apps on the test's Redis; their connections are closed at teardown."""
    clients: list[redis.Redis] = []
    apps: list[Flask] = []

    def make(settings: Settings) -> Flask:
        client = redis.Redis.from_url(settings.redis_url)
        clients.append(client)
        app = create_app(settings, redis_client=client)
        app.testing = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["predictq"].celery.close()
    for client in clients:
        client.close()


@pytest.fixture
def client(make_app: Callable[[Settings], Flask], settings: Settings, trained_version: str) -> FlaskClient:
    """A test client of the API serving ``trained_version``."""
    return make_app(settings).test_client()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Factory for worker subprocesses (a test may start several); all are stopped at teardown."""
    started = Workers(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def worker(workers: Workers, settings: Settings) -> WorkerProcess:
    """One ready worker configured from ``settings``."""
    return workers.start(settings)


@pytest.fixture(scope="module")
def local_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStacks]:
    """Factory for ``predictq up`` subprocesses; all are stopped (then killed if need be) at teardown."""
    stacks = LocalStacks(tmp_path_factory.mktemp("up"))
    yield stacks
    stacks.stop_all()


@pytest.fixture
def fresh_stacks(tmp_path: Path) -> Iterator[LocalStacks]:
    """Like ``local_stacks``, for one test: its runners are stopped (then killed, by pid) when it ends."""
    stacks = LocalStacks(tmp_path)
    yield stacks
    stacks.stop_all()


@pytest.fixture
def wait_for_job(workers: Workers) -> Callable[..., dict]:
    """Poll GET /jobs/<id> until the job reaches one of ``statuses``; fail with record and worker logs."""

    def wait(
        client: FlaskClient, job_id: str, *, statuses: frozenset[str] = FINISHED, timeout_s: float = JOB_TIMEOUT_S
    ) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            response = client.get(f"/jobs/{job_id}")
            record = response.get_json()
            assert response.status_code == 200, record
            if record["status"] in statuses:
                return record
            if time.monotonic() > deadline:
                pytest.fail(
                    f"job {job_id} is still {record['status']!r} after {timeout_s} s "
                    f"(waiting for {sorted(statuses)})\njob record:\n{json.dumps(record, indent=2)}\n{workers.logs()}"
                )
            time.sleep(POLL_S)

    return wait


@dataclass
class Expected:
    """What the model says about a frame when called directly, without the queue."""

    labels: list
    probabilities: np.ndarray  # one row per input row, columns in ``classes`` order
    classes: list[str]
    warnings: list[dict]
    quality: dict


@pytest.fixture
def in_process_predictions(model_store: ModelStore) -> Callable[[str, pd.DataFrame], Expected]:
    """Score ``frame`` with version ``version`` in this process: prepare, then the pipeline itself."""

    def predict(version: str, frame: pd.DataFrame) -> Expected:
        model = model_store.load(version)
        prepared = prepare(frame, model.schema, model.policy)
        return Expected(
            labels=model.pipeline.predict(prepared.frame).tolist(),
            probabilities=model.pipeline.predict_proba(prepared.frame),
            classes=[str(c) for c in model.pipeline.classes_],
            warnings=prepared.warnings(),
            quality=prepared.quality_summary(),
        )

    return predict


def assert_same_predictions(result: dict, expected: Expected) -> None:
    """A job's JSON result holds, row for row, the labels and probabilities of the direct call."""
    assert len(result["predictions"]) == len(expected.labels)
    assert result["predictions"] == expected.labels
    probabilities = np.array([[row[c] for c in expected.classes] for row in result["probabilities"]])
    # Small chunks may be scored by the compiled path: equal within the parity tolerance checked at training.
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=PARITY_TOLERANCE)


@pytest.fixture
def check_predictions() -> Callable[[dict, Expected], None]:
    return assert_same_predictions


def fetch_result(client: FlaskClient, job_id: str, **query: str) -> tuple[int, str, bytes]:
    """GET /jobs/<id>/result: status, content type, body (the file response closed after reading)."""
    with client.get(f"/jobs/{job_id}/result", query_string=query) as response:
        return response.status_code, response.mimetype, response.get_data()


@pytest.fixture
def get_result() -> Callable[..., tuple[int, str, bytes]]:
    return fetch_result


def penguin_rows(count: int, *, seed: int = 0) -> pd.DataFrame:
    """``count`` rows sampled with replacement from the demo table, target column dropped."""
    table = pd.read_csv(PENGUINS_CSV).drop(columns=TARGET)
    picks = np.random.default_rng(seed).integers(0, len(table), count)
    return table.iloc[picks].reset_index(drop=True)


@pytest.fixture(scope="session")
def penguin_sample() -> Callable[..., pd.DataFrame]:
    return penguin_rows


def assert_problem(response, status: int, title: str | None = None) -> dict:
    """An error answer is problem+json with the status in the body too; return the body."""
    body = response.get_json()
    assert response.status_code == status, body
    assert response.mimetype == "application/problem+json", response.mimetype
    assert body["status"] == status
    assert body["title"] and body["detail"]
    if title is not None:
        assert body["title"] == title, body
    return body


@pytest.fixture
def check_problem() -> Callable[..., dict]:
    return assert_problem

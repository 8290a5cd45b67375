"""Each docker-compose service's own command, run here with the environment compose gives it.

No Docker engine runs on the test machines, so the containers' commands run as local
processes: Redis on loopback stands in for the `redis` host, a temp folder for the
shared volume. A typo in a compose command or variable fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from readiness import wait_for_ready

from predictq.redis_server import free_port, start_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "compose-test-token"
WAIT_S = 120
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: ${VAR}, ${VAR:-default}, ${VAR:?error}, and $$ for a literal $."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator and operator.endswith("?"):
            raise AssertionError(f"compose would refuse to start: {argument}")
        return argument or ""

    return _VARIABLE.sub(replace, value)


def image_environment(base: dict[str, str]) -> dict[str, str]:
    """``base`` with the ENV of the Dockerfile's final stage applied ($VAR expanded, as Docker does)."""
    final_stage = REPO.joinpath("Dockerfile").read_text().split("\nFROM ")[-1]
    env = dict(base)
    for instruction in re.findall(r"^ENV (.+)$", final_stage.replace("\\\n", " "), re.M):
        for pair in shlex.split(instruction):
            key, _, value = pair.partition("=")
            env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
    return env


def service_process(service: dict, redis_url: str, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of one service, mapped from container to this machine."""
    compose_env = {"PREDICTQ_ADMIN_TOKEN": TOKEN}
    env = image_environment(dict(os.environ))
    env.update({key: interpolate(str(value), compose_env) for key, value in service.get("environment", {}).items()})
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", str(BIN))  # the image's virtualenv
    env["PREDICTQ_REDIS_URL"] = env["PREDICTQ_REDIS_URL"].replace("redis:6379", redis_url.split("//")[1].split("/")[0])
    assert env["PREDICTQ_DATA_DIR"] == "/var/lib/predictq", "the volume is mounted there"
    env["PREDICTQ_DATA_DIR"] = str(data_dir)
    env["PREDICTQ_DATASET_PATH"] = env["PREDICTQ_DATASET_PATH"].replace("/app/", f"{REPO}/")
    env["PREDICTQ_HOST"] = "127.0.0.1" if env.get("PREDICTQ_HOST") == "0.0.0.0" else env.get("PREDICTQ_HOST", "")
    env["PREDICTQ_PORT"] = str(port)
    return [interpolate(part, compose_env) for part in service["command"]], env


@pytest.fixture
def stack(tmp_path: Path):
    compose = yaml.safe_load(REPO.joinpath("docker-compose.yml").read_text())
    redis_process, redis_url = start_server(tmp_path / "redis")
    port = free_port()
    started: list[subprocess.Popen] = []
    logs = []

    def start(name: str) -> subprocess.Popen:
        argv, env = service_process(compose["services"][name], redis_url, tmp_path / "volume", port)
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed in teardown
        logs.append(log)
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    yield compose, start, port, tmp_path, redis_url
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for log in logs:
        log.close()
    redis_process.terminate()
    redis_process.wait(30)


def test_compose_commands_train_serve_and_score_a_job(stack) -> None:
    """trainer trains the demo model once, api answers, worker consumes a job: all from compose's commands."""
    _, start, port, tmp_path, _ = stack

    trainer = start("trainer")
    assert trainer.wait(WAIT_S) == 0, (tmp_path / "trainer.log").read_text()
    assert list((tmp_path / "volume" / "models").glob("*/manifest.json")), "the trainer saved no model"
    again = start("trainer")
    assert again.wait(WAIT_S) == 0
    assert len(list((tmp_path / "volume" / "models").glob("*/manifest.json"))) == 1, "a restart trained again"

    start("api")
    start("worker")
    url = f"http://127.0.0.1:{port}"
    wait_for_ready(url, WAIT_S, log_path=tmp_path / "api.log")

    row = {"island": "Dream", "bill_length_mm": 50.6, "bill_depth_mm": 19.4, "flipper_length_mm": 193,
           "body_mass_g": 3800, "sex": "male", "year": 2007}  # fmt: skip
    submitted = requests.post(f"{url}/jobs", json={"instances": [row] * 3}, timeout=10)
    assert submitted.status_code == 202, submitted.text
    status_url = submitted.headers["Location"]
    deadline = time.monotonic() + WAIT_S
    while (job := requests.get(status_url, timeout=10).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"{job}\n{(tmp_path / 'worker.log').read_text()[-3000:]}"
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 3, "total": 3}

    retrain = requests.post(f"{url}/retrain", headers={"Authorization": f"Bearer {TOKEN}"}, json={}, timeout=10)
    assert retrain.status_code == 202, retrain.text


def test_worker_healthcheck_command_sees_the_worker(stack) -> None:
    """The worker service's compose healthcheck passes against a running worker."""
    compose, start, _, tmp_path, redis_url = stack
    assert start("trainer").wait(WAIT_S) == 0
    start("worker")
    check = compose["services"]["worker"]["healthcheck"]
    assert check["test"][0] == "CMD-SHELL"
    command = interpolate(check["test"][1], {})
    _, env = service_process(compose["services"]["worker"], redis_url, tmp_path / "volume", free_port())
    deadline = time.monotonic() + WAIT_S
    while (
        done := subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    ).returncode:
        log = (tmp_path / "worker.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"{done.stdout}\n{done.stderr}\n{log}"
        time.sleep(1)

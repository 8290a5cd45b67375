"""docker-compose.yml against the Compose specification and the stack's own rules."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_tool() -> str:
    """Debian's docker-compose: skipped on a developer machine without it, required in CI."""
    tool = shutil.which("docker-compose")
    if tool is None:
        message = "Debian's docker-compose is not installed (make system-deps installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tool


def test_compose_file_passes_the_compose_validator() -> None:
    """`docker-compose config` accepts the file, with every profile, once the token is set."""
    tool = compose_tool()
    env = {"PATH": "/usr/bin:/bin", "PREDICTQ_ADMIN_TOKEN": "a-real-token"}
    for profile in ([], ["--profile", "monitoring"], ["--profile", "s3"]):
        done = subprocess.run(
            [tool, "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
            capture_output=True, text=True, env=env, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_compose_refuses_to_start_without_an_admin_token() -> None:
    """Without PREDICTQ_ADMIN_TOKEN, compose stops with a message naming it."""
    tool = compose_tool()
    done = subprocess.run(
        [tool, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode != 0
    assert "PREDICTQ_ADMIN_TOKEN" in done.stderr


def test_api_and_workers_wait_for_healthy_redis_and_the_one_shot_trainer(compose: dict) -> None:
    """API and worker start after Redis is healthy and the demo model exists, never racing to train it."""
    services = compose["services"]
    assert "healthcheck" in services["redis"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["trainer"]["command"] == ["predictq", "train", "--if-missing"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["trainer"]["condition"] == "service_completed_successfully"


def test_api_and_workers_share_one_data_volume(compose: dict) -> None:
    """Models and job files live on one named volume mounted by trainer, API and workers alike."""
    services = compose["services"]
    mounts = {name: services[name]["volumes"] for name in ("trainer", "api", "worker")}
    assert all(m == ["predictq-data:/var/lib/predictq"] for m in mounts.values()), mounts
    assert "predictq-data" in compose["volumes"]


def test_flower_is_optional(compose: dict) -> None:
    """Flower runs only with the monitoring profile."""
    assert compose["services"]["flower"]["profiles"] == ["monitoring"]

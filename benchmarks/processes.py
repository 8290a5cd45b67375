"""Child processes of a benchmark run: started on free loopback ports, waited for with a
deadline, and stopped by pid whatever happens, so nothing outlives the run."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 90.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Settings of the developer's shell must not leak into a measured server.
FOREIGN_VARIABLE_PREFIXES = ("PREDICTQ_", "PROMETHEUS_MULTIPROC_DIR")

_libc = ctypes.CDLL(None, use_errno=True)
_running: dict[int, subprocess.Popen] = {}


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends it SIGTERM when this
    # process dies, even by SIGKILL, so a server never outlives the benchmark.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A loopback port nothing listens on now: each server gets its own, never a shared one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_environment(**variables: object) -> dict[str, str]:
    """This process's environment without predictq's settings, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_VARIABLE_PREFIXES)}
    env.update({name: str(value) for name, value in variables.items()})
    return env


def start(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``argv`` in its own process group with output to ``log_path``."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers share its group: one killpg stops them all
            preexec_fn=_die_with_parent,
        )
    _running[process.pid] = process
    return process


def stop(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group, SIGKILL it if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout_s)
    _signal_group(process.pid, signal.SIGKILL)  # a worker still exiting after its master
    _running.pop(process.pid, None)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_all() -> None:
    """Stop every process this run started and has not stopped yet."""
    for process in list(_running.values()):
        stop(process)


def install_exit_handlers() -> None:
    """Stop children on normal exit, on Ctrl-C and on SIGTERM or SIGHUP."""
    atexit.register(stop_all)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # SystemExit unwinds through every finally block, which stop their own servers.
        signal.signal(signum, lambda number, _frame: sys.exit(128 + number))


def run(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion; it is killed when ``timeout_s`` runs out."""
    return subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        preexec_fn=_die_with_parent,
    )


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once GET ``url`` answers 200 from ``process``; raise if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} before it was ready")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s")
        time.sleep(0.2)


@dataclass(frozen=True)
class ProcessIdentity:
    """A pid with its start time, so a pid reused by another process is never signalled."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        ticks = _start_ticks(pid)
        return None if ticks is None else cls(pid, ticks)

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are plain numbers.
    return int(stat.rpartition(")")[2].split()[19])

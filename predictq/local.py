"""``predictq up``: Redis, a Celery worker and the API, supervised by one foreground process.

Each child's output is prefixed with its name. A child that exits is started again after a
back-off (1 s, doubling up to 30 s, back to 1 s once it has run for a minute), as compose's
``restart:`` does for containers. Only Ctrl-C, SIGTERM or SIGHUP stop the stack: the API and
the worker first, then Redis, so nothing in flight loses its broker, and all of it within
10 s, the time process managers (Docker, CI runners) give before they SIGKILL.

Each child runs in a session of its own, so a terminal's Ctrl-C reaches the supervisor only
and the stop order holds. On Linux the kernel also signals every child when the supervisor
dies, however it dies (``PR_SET_PDEATHSIG``); Celery's pool processes and gunicorn's
workers in turn follow their own master. So a SIGKILLed supervisor leaves nothing behind.

One thread does everything (starts, restarts, copies output): the kernel sends the death
signal when the *thread* that forked a child ends, and the main thread ends with the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import secrets
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from predictq.redis_server import (
    START_TIMEOUT_S,
    claim_socket,
    find_server_binary,
    ping,
    server_command,
    socket_path,
    socket_url,
)
from shared.settings import Settings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# API and worker get SIGTERM, then SIGKILL after this long; Redis then gets its own grace.
# Together well inside the 10 s a process manager waits before it SIGKILLs the supervisor.
APP_STOP_GRACE_S = 5.0
REDIS_STOP_GRACE_S = 2.0
KILL_WAIT_S = 0.5
POLL_S = 0.2
LOCK_NAME = "supervisor.lock"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def say(message: str) -> None:
    print(f"predictq: {message}", flush=True)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"code {returncode} ({signal.Signals(-returncode).name})"
    return f"code {returncode}"


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


def parent_death_signal(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``signum`` to the child once the supervisor dies.

    Linux only; None elsewhere, where the children are only stopped by the supervisor itself.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    supervisor = os.getpid()

    def die_with_supervisor() -> None:
        prctl(PR_SET_PDEATHSIG, signum)
        if os.getppid() != supervisor:  # it died before the request took effect
            os.kill(os.getpid(), signum)

    return die_with_supervisor


@dataclass
class Backoff:
    """How long to wait before starting a child again: doubling while it keeps exiting, reset after a good run."""

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0
    _next_s: float | None = None

    def delay_after(self, uptime_s: float) -> float:
        """The delay before the next start of a child that exited after ``uptime_s`` seconds."""
        if self._next_s is None or uptime_s >= self.healthy_after_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay


class OutputPump:
    """Copies the children's output to ours, each line prefixed with the child's name."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._partial: dict[int, bytes] = {}

    def add(self, name: str, pipe: IO[bytes]) -> None:
        self._selector.register(pipe, selectors.EVENT_READ, name)

    def run(self, timeout_s: float) -> None:
        """Copy what has arrived, waiting at most ``timeout_s`` for something to."""
        if not self._selector.get_map():
            time.sleep(timeout_s)
            return
        for key, _ in self._selector.select(timeout_s):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:  # every process holding the pipe has exited
                self._write(key.data, self._partial.pop(key.fd, b""))
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
                continue
            *lines, self._partial[key.fd] = (self._partial.get(key.fd, b"") + chunk).split(b"\n")
            for line in lines:
                self._write(key.data, line)
        sys.stdout.flush()

    @staticmethod
    def _write(name: str, line: bytes) -> None:
        if line:
            sys.stdout.write(f"{name:>6} | {line.decode(errors='replace')}\n")

    def close(self) -> None:
        for key in list(self._selector.get_map().values()):
            self._write(key.data, self._partial.pop(key.fd, b""))
            self._selector.unregister(key.fileobj)
            key.fileobj.close()
        sys.stdout.flush()


@dataclass
class Child:
    """One supervised process: how to start it, and when it may be started again."""

    name: str
    argv: list[str]
    death_signal: int  # what the kernel sends it when the supervisor dies
    stop_last: bool  # Redis: stopped once nothing uses it any more
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=Backoff)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the child and whatever it started (it leads its own process group)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)


class Stack:
    """The child processes of one local run: started, restarted when they exit, stopped in order."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.output = OutputPump()

    def start(
        self, name: str, argv: list[str], *, death_signal: int = signal.SIGKILL, stop_last: bool = False
    ) -> Child:
        child = Child(name, argv, death_signal, stop_last)
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # we decide the stop order, not the terminal's Ctrl-C
            preexec_fn=parent_death_signal(child.death_signal),  # safe: one thread forks (module doc)
        )
        self.output.add(child.name, child.process.stdout)
        child.started_at = time.monotonic()
        child.restart_at = None

    def wait_for(self, child: Child, ready: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Copy output until ``ready()`` or a stop is asked; raise if ``child`` exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not self.stopping.is_set() and not ready():
            if not child.running():
                raise RuntimeError(f"{what} exited with {describe_exit(child.process.returncode)} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} was not ready within {timeout_s} s")
            self.output.run(0.05)

    def supervise(self) -> None:
        """Until a stop is asked: copy output, and start again each child that exited, after its back-off."""
        while not self.stopping.is_set():
            self.output.run(POLL_S)
            now = time.monotonic()
            for child in self.children:
                if self.stopping.is_set():
                    break
                if child.restart_at is None and not child.running():
                    delay = child.backoff.delay_after(now - child.started_at)
                    child.restart_at = now + delay
                    code = describe_exit(child.process.returncode)
                    say(f"{child.name} exited with {code}; restarting in {delay:g} s")
                elif child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    say(f"starting {child.name} again (restart {child.restarts})")
                    self._spawn(child)

    def stop(self) -> None:
        """API and worker first, then Redis: SIGTERM, SIGKILL after the grace, then whatever they left."""
        self._stop_together([c for c in self.children if not c.stop_last], APP_STOP_GRACE_S)
        self._stop_together([c for c in self.children if c.stop_last], REDIS_STOP_GRACE_S)
        self.output.close()

    def _stop_together(self, children: list[Child], grace_s: float) -> None:
        running = [child for child in children if child.running()]
        if running:
            say(f"stopping {', '.join(child.name for child in running)}")
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(child.running() for child in running) and time.monotonic() < deadline:
            self.output.run(0.05)
        for child in running:
            if child.running():
                say(f"{child.name} did not stop within {grace_s:g} s; killing it")
                child.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(KILL_WAIT_S)
            say(f"{child.name} stopped with {describe_exit(child.process.returncode)}")
        for child in children:
            child.signal_group(signal.SIGKILL)  # a pool process or gunicorn worker its master left behind


@contextlib.contextmanager
def exclusive_redis_dir(redis_dir: Path) -> Iterator[None]:
    """Hold the embedded server's directory for this supervisor; refuse when another one holds it.

    The kernel releases the lock when the holder dies, however it dies.
    """
    fd = os.open(redis_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RuntimeError(
                f"another `predictq up` (pid {holder}) is running on the data directory {redis_dir.parent}; "
                "stop it first, or set PREDICTQ_DATA_DIR to another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def start_embedded_redis(stack: Stack, redis_dir: Path) -> str:
    """Start the server on its socket in ``redis_dir`` and wait for it; return its URL."""
    path = socket_path(redis_dir)
    claim_socket(path)
    url = socket_url(path)
    argv = server_command(find_server_binary(), redis_dir, unix_socket=path)
    # SIGTERM if the supervisor dies: the server writes its append-only file and exits at once.
    child = stack.start("redis", argv, death_signal=signal.SIGTERM, stop_last=True)
    stack.wait_for(child, lambda: ping(url), "the Redis server")
    return url


def run_stack(settings: Settings, prepare: Callable[[], None] = lambda: None) -> int:
    """Run the local stack until Ctrl-C or SIGTERM; return the exit code.

    ``prepare`` runs once the data directory is known to be this stack's alone (the demo
    model is trained there), before anything starts.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_dir = settings.data_dir / "redis"
    stack = Stack(dict(os.environ))
    try:
        with contextlib.ExitStack() as held:
            if not settings.redis_url:
                redis_dir.mkdir(mode=0o700, exist_ok=True)
                held.enter_context(exclusive_redis_dir(redis_dir))
            token_file = ensure_admin_token(settings)
            prepare()
            for signum in STOP_SIGNALS:
                signal.signal(signum, lambda *_: stack.stopping.set())
            held.callback(stack.stop)  # before the lock is released: Redis is down by then
            stack.env["PREDICTQ_REDIS_URL"] = settings.redis_url or start_embedded_redis(stack, redis_dir)
            if stack.stopping.is_set():
                return 0
            cli = [sys.executable, "-m", "predictq.cli"]
            stack.start("worker", [*cli, "worker"])
            stack.start("api", [*cli, "serve"])
            say(f"API on http://{settings.host}:{settings.port}  (Ctrl-C stops everything)")
            if token_file:
                say(f"admin token in {token_file}; read it with: cat {token_file}")
            stack.supervise()
        return 0
    except RuntimeError as exc:
        print(f"predictq: {exc}", file=sys.stderr, flush=True)
        return 1

"""`predictq up` as a supervisor: its children end with it however it ends, a crashed child comes
back, and its Redis is its own (a socket in the data directory, never a server it did not start)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import requests
from process_tree import command_line, descendants, kill_pids, start_time, wait_until_gone

from predictq.redis_server import find_server_binary, server_command, socket_in_use, wait_until_ready

if TYPE_CHECKING:
    from conftest import LocalStack, LocalStacks

pytestmark = pytest.mark.integration

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"

# What Docker and most CI runners give between SIGTERM and SIGKILL.
STACK_DOWN_S = 10.0
RESTART_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 60.0
REFUSAL_TIMEOUT_S = 60.0
ROWS = 5


@pytest.fixture(scope="module")
def stack(local_stacks: LocalStacks) -> LocalStack:
    """One running stack for the tests below that leave it running, started over a stale socket file.

    The file is what a server killed with the machine leaves: bound, then closed, nobody listening.
    """
    data_dir = local_stacks.log_dir / "var"
    path = data_dir / "redis" / "redis.sock"
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    assert path.exists() and not socket_in_use(path)
    started = local_stacks.start(data_dir)
    started.wait_ready()
    return started


def instances() -> list[dict]:
    rows = pd.read_csv(PENGUINS_CSV).drop(columns="species").head(ROWS)
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in rows.to_dict(orient="records")]


def run_job(stack: LocalStack, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Submit a small JSON job over HTTP (retrying while the API answers 503) and wait until it finishes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = requests.post(f"{stack.url}/jobs", json={"instances": instances()}, timeout=5)
            if response.status_code == 202:
                break
        except requests.RequestException:
            response = None
        if time.monotonic() > deadline:
            pytest.fail(f"no job accepted within {timeout_s} s ({response}):\n{stack.output()[-4000:]}")
        time.sleep(0.2)
    status_url = response.json()["status_url"]
    while True:
        record = requests.get(status_url, timeout=5).json()
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"job still {record['status']} after {timeout_s} s:\n{stack.output()[-4000:]}")
        time.sleep(0.2)


def new_child(stack: LocalStack, name: str, old_pid: int, timeout_s: float = RESTART_TIMEOUT_S) -> int:
    """Wait for the runner to have a child ``name`` other than ``old_pid``; return its pid."""
    deadline = time.monotonic() + timeout_s
    while (pid := stack.child(name)) in (None, old_pid):
        if time.monotonic() > deadline:
            pytest.fail(f"no new {name} within {timeout_s} s:\n{stack.output()[-4000:]}")
        time.sleep(0.1)
    return pid


def describe(pids: set[int]) -> str:
    return "\n".join(f"{pid}: {' '.join(command_line(pid)) or '(gone)'}" for pid in sorted(pids))


def tcp_listening_inodes() -> set[str]:
    """Socket inodes listening on TCP (v4 and v6) in this network namespace."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().partition("=")[::2] for pair in pairs if pair)


# --- the stack ends with its supervisor ----------------------------------------------------


def test_sigkill_of_the_supervisor_takes_every_child_down(fresh_stacks: LocalStacks, tmp_path: Path) -> None:
    """When the supervisor is SIGKILLed, Redis, the worker, the API and their own children are gone within 10 s."""
    stack = fresh_stacks.start(tmp_path / "var")
    stack.wait_ready()
    tree = stack.processes()
    assert len(tree) >= 5, describe(tree)  # Redis, the worker and its pool process, gunicorn and its worker

    os.kill(stack.process.pid, signal.SIGKILL)
    stack.process.wait(STACK_DOWN_S)
    left = wait_until_gone(tree, STACK_DOWN_S)
    assert not left, f"still running {STACK_DOWN_S} s after the supervisor was SIGKILLed:\n{describe(left)}"


def test_sigterm_to_its_group_takes_the_stack_down_within_10_s(fresh_stacks: LocalStacks, tmp_path: Path) -> None:
    """SIGTERM to the group, as process managers send it, stops API and worker, then Redis, all within 10 s,
    even with a worker that does not stop when asked (frozen here, as one finishing a long task would be)."""
    stack = fresh_stacks.start(tmp_path / "var")
    stack.wait_ready()
    tree = stack.processes()
    worker = stack.child("worker")
    assert worker is not None, stack.output()
    os.kill(worker, signal.SIGSTOP)

    signalled = time.monotonic()
    os.killpg(stack.process.pid, signal.SIGTERM)
    try:
        code = stack.process.wait(STACK_DOWN_S)
    except subprocess.TimeoutExpired:
        code = None
    left = wait_until_gone(tree, max(0.0, STACK_DOWN_S - (time.monotonic() - signalled)))
    took_s = time.monotonic() - signalled

    assert code == 0, stack.output()[-4000:]
    assert not left, f"still running {took_s:.1f} s after SIGTERM:\n{describe(left)}"
    output = stack.output()
    stopped = {name: output.find(f"predictq: {name} stopped") for name in ("api", "worker", "redis")}
    assert -1 not in stopped.values(), output[-4000:]
    assert stopped["redis"] > max(stopped["api"], stopped["worker"]), output[-4000:]


# --- crashed children come back --------------------------------------------------------------


def test_a_killed_worker_is_started_again_and_serves_the_next_job(stack: LocalStack) -> None:
    """SIGKILL of the worker's main process: its pool goes with it, the supervisor logs the exit code and starts
    a new worker, which serves the next job."""
    stack.processes()  # recorded for teardown, should any outlive this test
    old = stack.child("worker")
    pool = descendants(old)
    assert pool, "the worker has no pool process"
    os.kill(old, signal.SIGKILL)

    stack.wait_for_output("predictq: worker exited with code -9 (SIGKILL); restarting in 1 s", RESTART_TIMEOUT_S)
    assert not wait_until_gone(pool, STACK_DOWN_S), "pool processes outlived their worker"
    new_child(stack, "worker", old)
    job = run_job(stack)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": ROWS, "total": ROWS}


def test_a_killed_api_is_started_again(stack: LocalStack) -> None:
    """SIGKILL of gunicorn's master: its workers go with it, and a new API answers on the same port."""
    stack.processes()  # recorded for teardown, should any outlive this test
    old = stack.child("api")
    gunicorn_workers = descendants(old)
    assert gunicorn_workers, "gunicorn has no worker process"
    os.kill(old, signal.SIGKILL)

    stack.wait_for_output("predictq: api exited with code -9 (SIGKILL); restarting in 1 s", RESTART_TIMEOUT_S)
    assert not wait_until_gone(gunicorn_workers, STACK_DOWN_S), "gunicorn workers outlived their master"
    new_child(stack, "api", old)
    assert stack.wait_ready()["status"] == "ready"
    assert run_job(stack)["status"] == "succeeded"


def test_a_killed_redis_is_started_again_with_its_data(stack: LocalStack) -> None:
    """SIGKILL of Redis: a new server on the same socket and append-only file keeps the jobs, and new jobs run."""
    before = run_job(stack)
    assert before["status"] == "succeeded", before
    stack.processes()  # recorded for teardown, should any outlive this test
    old = stack.child("redis")
    os.kill(old, signal.SIGKILL)

    stack.wait_for_output("predictq: redis exited with code -9 (SIGKILL); restarting in 1 s", RESTART_TIMEOUT_S)
    new_child(stack, "redis", old)
    after = run_job(stack)
    assert after["status"] == "succeeded", after
    kept = requests.get(before["status_url"], timeout=5).json()
    assert kept["status"] == "succeeded" and kept["finished_at"] == before["finished_at"]


# --- the embedded Redis is this stack's own --------------------------------------------------


def test_redis_listens_on_a_private_socket_in_the_data_dir_replacing_a_stale_one(stack: LocalStack) -> None:
    """The stale socket file is replaced; the server listens there (mode 0700) and on no TCP port, and the
    worker and the API are handed that socket's URL."""
    path = stack.data_dir / "redis" / "redis.sock"
    assert socket_in_use(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    redis_pid = stack.child("redis")
    assert not socket_inodes(redis_pid) & tcp_listening_inodes(), "the embedded Redis listens on a TCP port"
    expected = f"unix://{path}?db=0"
    for name in ("worker", "api"):
        assert environment(stack.child(name))["PREDICTQ_REDIS_URL"] == expected
    assert run_job(stack)["status"] == "succeeded"


def test_a_second_stack_on_the_same_data_dir_is_refused(stack: LocalStack, fresh_stacks: LocalStacks) -> None:
    """A second `predictq up` on a data dir in use exits with a message naming it; the first keeps serving."""
    redis_pid = stack.child("redis")

    second = fresh_stacks.start(stack.data_dir)
    try:
        code = second.process.wait(REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 1, second.output()[-4000:]
    expected = f"another `predictq up` (pid {stack.process.pid}) is running on the data directory {stack.data_dir}"
    assert expected in second.output()
    assert stack.child("redis") == redis_pid
    assert run_job(stack)["status"] == "succeeded"


def test_a_server_it_did_not_start_is_never_used(fresh_stacks: LocalStacks, tmp_path: Path) -> None:
    """A live server on the data dir's socket (one no supervisor holds) makes `predictq up` refuse, not attach."""
    data_dir = tmp_path / "var"
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True)
    path = redis_dir / "redis.sock"
    log_path = tmp_path / "foreign-redis.log"
    with open(log_path, "wb") as log:
        foreign = subprocess.Popen(
            server_command(find_server_binary(), redis_dir, unix_socket=path), stdout=log, stderr=subprocess.STDOUT
        )
    foreign_start = start_time(foreign.pid)
    try:
        wait_until_ready(f"unix://{path}?db=0", foreign)
        stack = fresh_stacks.start(data_dir)
        try:
            code = stack.process.wait(REFUSAL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 1, stack.output()[-4000:]
        assert f"a Redis server already answers on {path}" in stack.output()
        assert foreign.poll() is None and socket_in_use(path), "the foreign server lost its socket"
    finally:
        foreign.terminate()
        try:
            foreign.wait(STACK_DOWN_S)
        except subprocess.TimeoutExpired:
            kill_pids({foreign.pid: foreign_start})
            foreign.wait(STACK_DOWN_S)

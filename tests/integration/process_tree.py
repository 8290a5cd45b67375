"""What a test can see of processes through /proc: trees, groups, and whether a pid still names the same process.

Linux only, as the integration tests are. A pid with its start time names one process for
good, so a test never signals a process that merely reused the pid of one of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

POLL_S = 0.05


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has exited; it only awaits reaping)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the pid, it names one process for good."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None else None


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def children_of(pid: int) -> set[int]:
    """Live processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) is not None and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def group_members(pgid: int) -> set[int]:
    """Live processes in process group ``pgid``."""
    members = set()
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(entry.name))
    return members


def wait_until_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Wait for every pid to exit; return those still running at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (alive := {pid for pid in pids if is_running(pid)}) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return alive


def kill_pids(pids: set[int] | dict[int, int | None]) -> None:
    """SIGKILL each pid; given ``{pid: start_time}``, only while the pid still names that process."""
    started = pids if isinstance(pids, dict) else dict.fromkeys(pids)
    for pid, started_at in started.items():
        if started_at is not None and start_time(pid) != started_at:
            continue  # gone, and the pid perhaps reused by a process that is not ours
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

"""Peak resident memory of every process under one root, sampled while they run.

Each process's kernel high-water mark (``VmHWM``) is read every ``interval_s``; pool
processes may exit before the end, so the last value read for each is kept.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import ProcessIdentity

SAMPLE_INTERVAL_S = 0.2
REDIS = "redis"
WORKER_MAIN = "worker main process"
WORKER_POOL = "worker pool process"
API_MASTER = "api gunicorn master"
API_WORKER = "api gunicorn worker"
ROOT = "predictq up"
OTHER = "other"
WORKER_ROLES = (WORKER_MAIN, WORKER_POOL)


@dataclass
class ProcessPeak:
    pid: int
    role: str
    command: str
    peak_rss_kib: int = 0

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process on the machine."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _read(f"/proc/{entry.name}/stat")):
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    return parents


def _high_water_kib(pid: int) -> int | None:
    status = _read(f"/proc/{pid}/status") or ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def classify(command: str, parent_role: str | None) -> str:
    """The role of a process of the local stack, from its command line and its parent's role."""
    if parent_role is None:
        return ROOT
    if parent_role == ROOT:
        if "redis-server" in command or "valkey-server" in command:
            return REDIS
        if "gunicorn" in command:
            return API_MASTER
        if " worker" in command:
            return WORKER_MAIN
    if parent_role == WORKER_MAIN:
        return WORKER_POOL
    if parent_role == API_MASTER:
        return API_WORKER
    return OTHER


class PeakMemorySampler(threading.Thread):
    """Samples the tree under ``root_pid`` until :meth:`finish` is called."""

    def __init__(self, root_pid: int, interval_s: float = SAMPLE_INTERVAL_S):
        super().__init__(name="peak-memory", daemon=True)
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peaks: dict[int, ProcessPeak] = {}
        self.seen: dict[int, ProcessIdentity] = {}
        self._finished = threading.Event()

    def run(self) -> None:
        while not self._finished.is_set():
            self.sample()
            self._finished.wait(self.interval_s)

    def finish(self) -> None:
        self._finished.set()
        self.join()

    def sample(self) -> None:
        children = defaultdict(list)
        for pid, parent in _parent_pids().items():
            children[parent].append(pid)
        pending: list[tuple[int, str | None]] = [(self.root_pid, None)]
        while pending:
            pid, parent_role = pending.pop()
            peak = self._record(pid, parent_role)
            if peak is not None:
                pending.extend((child, peak.role) for child in children[pid])

    def _record(self, pid: int, parent_role: str | None) -> ProcessPeak | None:
        high_water = _high_water_kib(pid)
        if high_water is None:
            return self.peaks.get(pid)
        if pid not in self.peaks:
            self.peaks[pid] = ProcessPeak(pid, OTHER, "")
            if (identity := ProcessIdentity.of(pid)) is not None:
                self.seen[pid] = identity
        peak = self.peaks[pid]
        # Read each time: `predictq serve` execs gunicorn, so a process's command changes.
        peak.command = (_read(f"/proc/{pid}/cmdline") or peak.command).replace("\0", " ").strip()
        peak.role = classify(peak.command, parent_role)
        peak.peak_rss_kib = max(peak.peak_rss_kib, high_water)
        return peak

    def kill_leftovers(self) -> list[int]:
        """SIGKILL any process of the tree still alive (the root failed to stop it); their pids."""
        leftovers = [identity for identity in self.seen.values() if identity.alive()]
        for identity in leftovers:
            identity.kill()
        return [identity.pid for identity in leftovers]

    def report(self) -> dict:
        """Peak RSS in MiB: every process, and the largest of each role."""
        by_role: dict[str, float] = {}
        for peak in self.peaks.values():
            by_role[peak.role] = max(by_role.get(peak.role, 0.0), peak.peak_rss_mib)
        worker_peaks = [by_role[role] for role in WORKER_ROLES if role in by_role]
        return {
            "worker_peak_rss_mib": max(worker_peaks) if worker_peaks else None,
            "peak_rss_mib_by_role": {role: round(mib, 1) for role, mib in sorted(by_role.items())},
            "processes": [
                {"pid": p.pid, "role": p.role, "peak_rss_mib": round(p.peak_rss_mib, 1)}
                for p in sorted(self.peaks.values(), key=lambda p: (p.role, p.pid))
            ],
        }

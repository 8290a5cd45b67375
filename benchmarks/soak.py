"""Soak: concurrent clients mixing ``/predict``, ``/jobs`` and polling against a fresh local stack.

Each client thread loops until the duration is spent, choosing at random (seeded) between a
small ``POST /predict``, a JSON ``POST /jobs`` and a ``GET /jobs/<id>`` poll of one of its
jobs. Then every job is waited for and its result fetched: it must have succeeded with
exactly the rows sent, each id once and in order. The report gives requests, errors (any
unexpected status, failed request or wrong answer), latency percentiles per kind, and the
jobs' outcome; the exit code is 1 unless there were no errors and every job was exact.

    python -m benchmarks.soak --duration-s 600 --clients 8 --json var/soak/soak.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from benchmarks import processes
from benchmarks.servers import predictq_command

log = logging.getLogger("benchmarks.soak")

PENGUINS_CSV = processes.REPO / "data" / "penguins.csv"
TARGET = "species"
ID_COLUMN = "ref"
REQUEST_TIMEOUT_S = 30.0
JOBS_TIMEOUT_S = 300.0
STACK_STOP_TIMEOUT_S = 90.0
DEFAULT_LOG = processes.REPO / "var" / "soak" / "up.log"
POLL_S = 0.2
# What a client does next, by weight: mostly small predictions, as a service sees them.
MIX = {"predict": 6, "submit": 1, "poll": 3}
PREDICT_ROWS = (1, 20)
JOB_ROWS = (20, 1_000)
# A client with this many unfinished jobs polls instead of submitting another, as a client
# waiting for its results would: the queue stays bounded however long the soak runs.
MAX_OUTSTANDING_JOBS = 2
# Each job's rows are split this small, so every job has several chunks to schedule.
JOB_CHUNK_ROWS = 250


@dataclass
class Job:
    job_id: str
    ids: list[str]
    status: str = "queued"
    record: dict = field(default_factory=dict)


@dataclass
class Tally:
    """What every client saw; one lock guards it (the clients are threads)."""

    latencies_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, call) -> requests.Response | None:
        started = time.perf_counter()
        try:
            response = call()
        except requests.RequestException as exc:
            self.error(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        with self.lock:
            self.latencies_s[kind].append(time.perf_counter() - started)
        return response

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)
        log.error("%s", message)


def demo_rows() -> list[dict]:
    """The demo table without its target, as JSON records (missing values as null)."""
    frame = pd.read_csv(PENGUINS_CSV).drop(columns=TARGET)
    return json.loads(frame.to_json(orient="records"))


class Client(threading.Thread):
    """One client: its own connection, its own random choices, its own jobs."""

    def __init__(self, number: int, base_url: str, rows: list[dict], deadline: float, tally: Tally, seed: int):
        super().__init__(name=f"soak-client-{number}", daemon=True)
        self.number = number
        self.base_url = base_url
        self.rows = rows
        self.deadline = deadline
        self.tally = tally
        self.random = random.Random(seed * 1000 + number)
        self.session = requests.Session()
        self.jobs: list[Job] = []
        self.submitted = 0

    def run(self) -> None:
        kinds, weights = zip(*MIX.items(), strict=True)
        try:
            while time.monotonic() < self.deadline:
                kind = self.random.choices(kinds, weights)[0]
                if kind == "poll" and not self.jobs:
                    kind = "submit"
                elif kind == "submit" and len(self.jobs) >= MAX_OUTSTANDING_JOBS:
                    kind = "poll"
                getattr(self, kind)()
        finally:
            self.session.close()

    def sample(self, bounds: tuple[int, int]) -> list[dict]:
        return self.random.choices(self.rows, k=self.random.randint(*bounds))

    def predict(self) -> None:
        instances = self.sample(PREDICT_ROWS)
        url = f"{self.base_url}/predict"
        response = self.tally.timed(
            "predict", lambda: self.session.post(url, json={"instances": instances}, timeout=REQUEST_TIMEOUT_S)
        )
        if response is None:
            return
        if response.status_code != 200:
            self.tally.error(f"POST /predict: {response.status_code} {response.text[:300]}")
        elif len(response.json()["predictions"]) != len(instances):
            self.tally.error(f"POST /predict: {len(response.json()['predictions'])} predictions for {len(instances)}")

    def submit(self) -> None:
        self.submitted += 1
        ids = [f"c{self.number}-j{self.submitted}-r{n}" for n in range(self.random.randint(*JOB_ROWS))]
        picks = self.random.choices(self.rows, k=len(ids))
        instances = [{**row, ID_COLUMN: ref} for row, ref in zip(picks, ids, strict=True)]
        body = {"instances": instances, "id_column": ID_COLUMN}
        url = f"{self.base_url}/jobs"
        response = self.tally.timed("submit", lambda: self.session.post(url, json=body, timeout=REQUEST_TIMEOUT_S))
        if response is None:
            return
        if response.status_code != 202:
            self.tally.error(f"POST /jobs: {response.status_code} {response.text[:300]}")
            return
        job = Job(response.json()["job_id"], ids)
        self.jobs.append(job)
        with self.tally.lock:
            self.tally.jobs.append(job)

    def poll(self) -> None:
        job = self.random.choice(self.jobs)
        url = f"{self.base_url}/jobs/{job.job_id}"
        response = self.tally.timed("poll", lambda: self.session.get(url, timeout=REQUEST_TIMEOUT_S))
        if response is None:
            return
        if response.status_code != 200:
            self.tally.error(f"GET /jobs/{job.job_id}: {response.status_code} {response.text[:300]}")
            return
        job.record = response.json()
        job.status = job.record["status"]
        if job.status not in ("queued", "running"):
            self.jobs.remove(job)  # finished: checked once the clients stop


def check_jobs(base_url: str, jobs: list[Job], tally: Tally, timeout_s: float = JOBS_TIMEOUT_S) -> dict:
    """Wait for every job, then check each result holds exactly its ids, in order."""
    deadline = time.monotonic() + timeout_s
    counts = {"submitted": len(jobs), "succeeded": 0, "exact": 0}
    with requests.Session() as session:
        for job in jobs:
            try:
                while True:
                    job.record = session.get(f"{base_url}/jobs/{job.job_id}", timeout=REQUEST_TIMEOUT_S).json()
                    if job.record["status"] not in ("queued", "running") or time.monotonic() > deadline:
                        break
                    time.sleep(POLL_S)
                if job.record["status"] != "succeeded":
                    tally.error(f"job {job.job_id} {job.record['status']}: {job.record.get('error')}")
                    continue
                result = session.get(f"{base_url}/jobs/{job.job_id}/result", timeout=REQUEST_TIMEOUT_S)
            except requests.RequestException as exc:
                tally.error(f"job {job.job_id}: {type(exc).__name__}: {exc}")
                continue
            counts["succeeded"] += 1
            progress = job.record["progress"]
            ids = result.json().get("ids") if result.status_code == 200 else None
            if progress != {"done": len(job.ids), "total": len(job.ids)} or ids != job.ids:
                tally.error(f"job {job.job_id}: progress {progress}, {len(ids or [])} ids for {len(job.ids)} rows")
                continue
            counts["exact"] += 1
    counts["rows"] = sum(len(job.ids) for job in jobs)
    return counts


def percentiles_ms(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {"count": 0}
    values = np.array(latencies_s) * 1000
    return {
        "count": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


def soak(duration_s: float, clients: int, seed: int, data_dir: Path, log_path: Path) -> dict:
    """Run the clients against a fresh ``predictq up`` on ``data_dir``; return the report."""
    port = processes.free_port()
    env = processes.child_environment(
        PREDICTQ_DATA_DIR=data_dir, PREDICTQ_PORT=port, PREDICTQ_JOB_CHUNK_ROWS=JOB_CHUNK_ROWS
    )
    base_url = f"http://127.0.0.1:{port}"
    stack = processes.start([*predictq_command(), "up"], log_path, env)
    try:
        processes.wait_until_ready(f"{base_url}/readyz", stack)
        tally = Tally()
        rows = demo_rows()
        started = time.monotonic()
        threads = [Client(n, base_url, rows, started + duration_s, tally, seed) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(duration_s + REQUEST_TIMEOUT_S * 2)
        elapsed_s = time.monotonic() - started
        jobs = check_jobs(base_url, tally.jobs, tally)
        if stack.poll() is not None:
            tally.error(f"the stack exited with {stack.returncode} during the soak")
    finally:
        processes.stop(stack, STACK_STOP_TIMEOUT_S)
    everything = [value for values in tally.latencies_s.values() for value in values]
    return {
        "duration_s": round(elapsed_s, 1),
        "clients": clients,
        "seed": seed,
        "requests": len(everything),
        "requests_per_s": round(len(everything) / elapsed_s, 1),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:10],
        "latency": {"all": percentiles_ms(everything), **{k: percentiles_ms(v) for k, v in tally.latencies_s.items()}},
        "jobs": jobs,
        "ok": not tally.errors and jobs["exact"] == jobs["submitted"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0, help="how long the clients run [600]")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads [8]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--log", type=Path, default=DEFAULT_LOG, help="the stack's output [var/soak/up.log]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    processes.install_exit_handlers()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="predictq-soak-") as scratch:
        report = soak(args.duration_s, args.clients, args.seed, Path(scratch) / "data", args.log)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

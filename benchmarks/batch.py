"""A CSV batch job end to end on predictq's local stack (``predictq up``): submit the file,
poll the job, download the CSV result, with the peak memory of every process."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import requests

from benchmarks import processes
from benchmarks.memory import PeakMemorySampler
from benchmarks.servers import predictq_command

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
# `predictq up` stops the API, the worker and Redis in turn, each given 20 s.
STACK_STOP_TIMEOUT_S = 90.0
WARMUP_TIMEOUT_S = 300.0
UNFINISHED = ("queued", "running")
DOWNLOAD_BLOCK_BYTES = 1 << 20


def job_timeout_s(rows: int) -> float:
    """Generous for a slow product (5,000 rows/s), yet bounded."""
    return 120.0 + rows / 5_000


def run_job(base_url: str, csv_path: Path, rows: int, timeout_s: float) -> dict:
    """Submit ``csv_path`` as text/csv, wait for the job, download its CSV result; timings in s."""
    started = time.perf_counter()
    with csv_path.open("rb") as body:
        response = requests.post(f"{base_url}/jobs", data=body, headers={"Content-Type": "text/csv"}, timeout=timeout_s)
    if response.status_code != 202:
        raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text[:400]}")
    submitted = time.perf_counter()
    status_url = response.json()["status_url"]
    deadline = started + timeout_s
    while (job := requests.get(status_url, timeout=30).json())["status"] in UNFINISHED:
        if time.perf_counter() > deadline:
            requests.delete(status_url, timeout=30)
            raise TimeoutError(f"the job was not done after {timeout_s:.0f} s (progress {job['progress']})")
        time.sleep(POLL_INTERVAL_S)
    finished = time.perf_counter()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the job {job['status']}: {job.get('error')}")
    lines, result_bytes = _download(f"{status_url}/result?format=csv", timeout_s)
    downloaded = time.perf_counter()
    if lines != rows + 1:  # a header, then one line per row
        raise RuntimeError(f"the CSV result has {lines - 1} rows for {rows} submitted")
    total_s = downloaded - started
    return {
        "rows": rows,
        "submit_s": round(submitted - started, 3),
        "queue_and_scoring_s": round(finished - submitted, 3),
        "download_s": round(downloaded - finished, 3),
        "total_s": round(total_s, 3),
        "rows_per_s": rows / total_s,
        "result_bytes": result_bytes,
    }


def _download(url: str, timeout_s: float) -> tuple[int, int]:
    """Stream the result and count its lines and bytes; it is never held whole in memory."""
    lines = size = 0
    with requests.get(url, stream=True, timeout=timeout_s) as response:
        response.raise_for_status()
        for block in response.iter_content(DOWNLOAD_BLOCK_BYTES):
            lines += block.count(b"\n")
            size += len(block)
    return lines, size


def run_batch(
    data_dir: Path, csv_path: Path, rows: int, worker_processes: int, warmup_csv: Path, log_path: Path
) -> dict:
    """One timed job on a fresh ``predictq up`` with ``worker_processes`` Celery processes.

    A small job runs first and is not timed: it waits out the worker's start and loads the
    model in its pool processes, as in a service that is already running.
    """
    port = processes.free_port()
    env = processes.child_environment(
        PREDICTQ_DATA_DIR=data_dir,
        PREDICTQ_PORT=port,
        PREDICTQ_WORKER_CONCURRENCY=worker_processes,
    )
    base_url = f"http://127.0.0.1:{port}"
    stack = processes.start([*predictq_command(), "up"], log_path, env)
    sampler = PeakMemorySampler(stack.pid)
    sampler.start()
    try:
        processes.wait_until_ready(f"{base_url}/readyz", stack)
        warmup_rows = sum(1 for _ in warmup_csv.open()) - 1
        run_job(base_url, warmup_csv, warmup_rows, WARMUP_TIMEOUT_S)
        result = run_job(base_url, csv_path, rows, job_timeout_s(rows))
    finally:
        processes.stop(stack, STACK_STOP_TIMEOUT_S)
        sampler.finish()
        if leftovers := sampler.kill_leftovers():
            log.warning("killed processes the local stack left running: %s", leftovers)
    result["worker_processes"] = worker_processes
    result["memory"] = sampler.report()
    log.info(
        "batch %d rows, %d worker processes: %.1f s, %.0f rows/s, worker peak RSS %.0f MiB",
        rows, worker_processes, result["total_s"], result["rows_per_s"], result["memory"]["worker_peak_rss_mib"] or 0,
    )  # fmt: skip
    return result

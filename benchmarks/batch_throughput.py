"""Throughput of a CSV batch job: submit N rows, time until the result is ready.

Run: .venv/bin/python benchmarks/batch_throughput.py [--rows 100000] [--concurrency 2]
Starts its own Redis (embedded) and one Celery worker with --concurrency processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import redis

from api import create_app
from predictq.redis_server import start_server
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.store import ModelStore
from shared.training import TrainingOptions

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "data" / "penguins.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="predictq-batch-bench-"))
    redis_process, url = start_server(work / "redis", stdout=subprocess.DEVNULL)
    settings = Settings(data_dir=work / "data", redis_url=url, job_chunk_rows=args.chunk_rows, log_level="WARNING")
    train_version(ModelStore.from_settings(settings), DATASET, TrainingOptions(target="species"))
    frame = pd.read_csv(DATASET).drop(columns=["species"]).sample(args.rows, replace=True, random_state=0)
    csv_path = work / "rows.csv"
    frame.to_csv(csv_path, index=False)

    env = {
        **os.environ,
        "PREDICTQ_DATA_DIR": str(settings.data_dir),
        "PREDICTQ_REDIS_URL": url,
        "PREDICTQ_JOB_CHUNK_ROWS": str(args.chunk_rows),
        "PREDICTQ_LOG_LEVEL": "INFO",
    }
    worker_log = open(work / "worker.log", "w")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "predictq.cli", "worker", f"--concurrency={args.concurrency}"],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        time.sleep(5)  # worker start-up is not part of the figure
        client = create_app(settings, redis_client=redis.Redis.from_url(url)).test_client()
        start = time.perf_counter()
        with open(csv_path, "rb") as body:
            submitted = client.post("/jobs", data=body, content_type="text/csv")
        accepted_s = time.perf_counter() - start
        status_url = f"/jobs/{submitted.get_json()['job_id']}"
        while (job := client.get(status_url).get_json())["status"] in ("queued", "running"):
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
        result = client.get(f"{status_url}/result?format=csv")
        rows_out = result.get_data().count(b"\n") - 1
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "worker_processes": args.concurrency,
                    "chunk_rows": args.chunk_rows,
                    "status": job["status"],
                    "rows_in_result": rows_out,
                    "submit_s": round(accepted_s, 2),
                    "total_s": round(elapsed, 2),
                    "rows_per_s": round(args.rows / elapsed),
                },
                indent=2,
            )
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        worker_log.close()
        print(f"worker log: {work / 'worker.log'}")
        redis_process.terminate()
        redis_process.wait(30)


if __name__ == "__main__":
    main()

"""Latency of POST /predict: in process (model call plus coercion) and over HTTP (gunicorn).

Run: .venv/bin/python benchmarks/predict_latency.py [--requests 500]
Trains the demo model into a temporary data directory, so it measures a fresh setup.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import requests

from api import create_app
from predictq.redis_server import free_port
from shared.lifecycle import train_version
from shared.settings import Settings
from shared.store import ModelStore
from shared.training import TrainingOptions

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "data" / "penguins.csv"


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(pick(0.95), 3),
        "p99_ms": round(pick(0.99), 3),
    }


def rows(count: int) -> list[dict]:
    frame = pd.read_csv(DATASET).drop(columns=["species"]).sample(count, replace=True, random_state=0)
    return json.loads(frame.to_json(orient="records"))


def time_calls(call, count: int) -> list[float]:
    for _ in range(20):  # warm-up
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--estimator", default="random_forest")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="predictq-bench-"))
    settings = Settings(data_dir=data_dir)
    store = ModelStore.from_settings(settings)
    train_version(store, DATASET, TrainingOptions(target="species", estimator=args.estimator))

    results: dict[str, dict] = {"estimator": {"name": args.estimator}}
    client = create_app(settings).test_client()
    for size in (1, 100):
        body = {"instances": rows(size)}
        results[f"in_process_{size}_rows"] = percentiles(
            time_calls(lambda body=body: client.post("/predict", json=body), args.requests)
        )

    port = free_port()
    env = {**os.environ, "PREDICTQ_DATA_DIR": str(data_dir), "PREDICTQ_PORT": str(port), "PREDICTQ_API_WORKERS": "2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "predictq.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        session = requests.Session()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if session.get(f"{url}/readyz", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        for size in (1, 100):
            body = {"instances": rows(size)}
            results[f"http_{size}_rows"] = percentiles(
                time_calls(
                    lambda body=body: session.post(f"{url}/predict", json=body).raise_for_status(), args.requests
                )
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

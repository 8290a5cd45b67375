"""The soak's CI form: ``benchmarks.soak`` for 60 s against a fresh ``predictq up`` (``make soak`` runs it longer)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 60
# Stack start and first training, the clients, every job drained and checked, the stack stopped.
TIMEOUT_S = DURATION_S + 180


@pytest.mark.timeout(TIMEOUT_S + 90)  # beyond the suite's 300 s: room to stop the soak when it overruns
def test_a_minute_of_mixed_clients_has_no_error_and_every_job_exact(tmp_path: Path) -> None:
    """Eight clients mixing /predict, /jobs and polls for 60 s: no error, every job succeeded with each of
    its rows once, and the report carries the figures docs/soak.md quotes."""
    report_path = tmp_path / "soak.json"
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREDICTQ_")}
    argv = [sys.executable, "-m", "benchmarks.soak", f"--duration-s={DURATION_S}", f"--json={report_path}"]
    with open(tmp_path / "soak.out", "wb") as out:
        process = subprocess.Popen(
            [*argv, f"--log={tmp_path / 'up.log'}"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = process.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the soak stops its stack on SIGTERM
        process.wait(60)
        pytest.fail(f"the soak did not end within {TIMEOUT_S} s:\n{(tmp_path / 'soak.out').read_text()[-4000:]}")
    output = (tmp_path / "soak.out").read_text()
    assert report_path.exists(), output[-4000:]
    report = json.loads(report_path.read_text())

    assert code == 0, json.dumps(report, indent=2)
    assert report["errors"] == 0, report["first_errors"]
    assert report["duration_s"] >= DURATION_S
    assert report["requests"] > 0 and report["latency"]["predict"]["count"] > 0
    jobs = report["jobs"]
    assert jobs["submitted"] > 0
    assert jobs["succeeded"] == jobs["exact"] == jobs["submitted"], jobs
    assert report["latency"]["all"]["p99_ms"] > 0

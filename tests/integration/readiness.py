"""Waiting for a server started by a test: bounded, and failing with the server's own log."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests

POLL_S = 0.25


def wait_for_ready(
    url: str, timeout_s: float, *, process: subprocess.Popen | None = None, log_path: Path | None = None
) -> dict:
    """Poll ``GET {url}/readyz`` until 200 and return its body; fail if ``process`` exits or time runs out."""

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-4000:] if log_path and log_path.exists() else ""

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = requests.get(f"{url}/readyz", timeout=5)
            if response.status_code == 200:
                return response.json()
        except requests.RequestException:
            pass
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode} before {url} was ready:\n{log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{url} was not ready within {timeout_s} s:\n{log_tail()}")
        time.sleep(POLL_S)

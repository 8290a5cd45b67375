"""The load generator: wrk with a Lua script that POSTs one JSON body and prints exact figures.

wrk's own text rounds latencies to two decimals of the unit it picks; the script's ``done``
hook prints the histogram's percentiles in microseconds as one JSON line instead.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.processes import run

RESULT_MARKER = "PREDICTQ_BENCH_RESULT "
# Slow answers (a forest on 1,000 rows under load) are measured, not dropped as timeouts.
REQUEST_TIMEOUT_S = 10
SCRIPT = """\
-- POST one JSON body; at the end print wrk's figures as one JSON line.
local body_file = assert(io.open([[@BODY_PATH@]], "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write("@MARKER@" .. string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "non_2xx": %d, "mean_us": %.1f, "max_us": %.1f, '
      .. '"p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)) .. "\\n")
end
"""


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured."""

    connections: int
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: int
    non_2xx: int

    def to_dict(self) -> dict:
        return asdict(self)


def write_script(body_path: Path, script_path: Path) -> Path:
    """A wrk script that POSTs the JSON in ``body_path``."""
    script = SCRIPT.replace("@BODY_PATH@", str(body_path.resolve())).replace("@MARKER@", RESULT_MARKER)
    script_path.write_text(script)
    return script_path


def parse_wrk_output(text: str, connections: int) -> LoadResult:
    """Read the figures the script's ``done`` hook printed among wrk's own output."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise ValueError(f"no {RESULT_MARKER.strip()} line in wrk's output:\n{text}")
    figures = json.loads(lines[-1].removeprefix(RESULT_MARKER))
    duration_s = figures["duration_us"] / 1e6
    return LoadResult(
        connections=connections,
        requests=figures["requests"],
        duration_s=round(duration_s, 3),
        requests_per_s=round(figures["requests"] / duration_s, 1),
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        mean_ms=round(figures["mean_us"] / 1000, 4),
        max_ms=figures["max_us"] / 1000,
        socket_errors=sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
        non_2xx=figures["non_2xx"],
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed; `make bench` installs it (apt-get install wrk)")
    return found


def wrk_version() -> str:
    """The version wrk reports ("debian/4.1.0-3+b2" from "wrk debian/4.1.0-3+b2 [epoll] ...")."""
    completed = run([wrk_binary(), "--version"], timeout_s=10)
    words = (completed.stdout or completed.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


def run_wrk(url: str, script_path: Path, *, connections: int, duration_s: float) -> LoadResult:
    """Load ``url`` with ``connections`` keep-alive connections for ``duration_s`` seconds."""
    threads = min(connections, 2)  # one per core of a 2-core machine, never more than connections
    argv = [
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration_s}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        "--latency",
        f"--script={script_path}",
        url,
    ]
    completed = run(argv, timeout_s=duration_s + REQUEST_TIMEOUT_S + 30)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed with code {completed.returncode}: {completed.stderr.strip()}")
    return parse_wrk_output(completed.stdout, connections)

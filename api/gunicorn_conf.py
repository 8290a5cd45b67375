"""gunicorn settings that `predictq serve` passes with ``--config python:api.gunicorn_conf``.

gunicorn's own log lines go through predictq's handler (JSON by default); its access lines
are dropped because the app logs every request itself, with the request id. The hooks keep
the Prometheus multiprocess directory that `predictq serve` prepared tidy.
"""

from __future__ import annotations

import os

from gunicorn import glogging
from prometheus_client import multiprocess

from api.metrics import fresh_multiprocess_dir, remove_multiprocess_dir
from shared.logs import logging_config
from shared.settings import load_settings

# gunicorn reads every module-level name that is one of its settings; private names are ours.
_settings = load_settings()

logconfig_dict = logging_config(_settings)


class _AppLogsRequests(glogging.Logger):
    """gunicorn's logger without access lines: the app writes one per request, with its id.

    Dropping them by level alone would still format each one first, on every answer.
    """

    def access(self, resp, req, environ, request_time) -> None:
        return None


logger_class = _AppLogsRequests
# The heartbeat each worker writes to its temporary file, on every pass of its loop: in memory,
# not on the disk (or a container's overlay file system) where it costs a system call that waits.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"


def on_starting(server) -> None:
    """Master starting: no metric files of an earlier run may be summed with this one's."""
    if _settings.prometheus_multiproc_dir is None:
        server.log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows one worker process's counts")
    else:
        fresh_multiprocess_dir(_settings.prometheus_multiproc_dir)


def child_exit(server, worker) -> None:
    """A worker process exited: its live gauges no longer count (its counters still do)."""
    if _settings.prometheus_multiproc_dir is not None:
        multiprocess.mark_process_dead(worker.pid, str(_settings.prometheus_multiproc_dir))


def on_exit(server) -> None:
    """Master stopping: the metric files belong to this run only."""
    if _settings.prometheus_multiproc_dir is not None:
        remove_multiprocess_dir(_settings.prometheus_multiproc_dir)

"""Worker logging: predictq's configuration instead of Celery's, and the job each task serves on its lines."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, task_postrun, task_prerun

from shared.logs import bind_context, clear_context, configure_logging
from shared.settings import Settings


def configure_worker_logging(settings: Settings) -> None:
    """Configure logging as the API does, keep Celery from replacing it, and tag each task's lines.

    Call before the worker starts: its pool processes are forked with these handlers and signals.
    The task's job id is tagged here; ``worker.tasks`` adds the request id and model version
    from the job record once it has read it.
    """
    configure_logging(settings)
    # Celery installs its own handlers and format only when nobody receives this signal.
    setup_logging.connect(_keep_predictq_logging, weak=False, dispatch_uid="predictq.logs")
    task_prerun.connect(bind_task, weak=False, dispatch_uid="predictq.logs")
    task_postrun.connect(unbind_task, weak=False, dispatch_uid="predictq.logs")


def _keep_predictq_logging(**_: Any) -> None:
    return None


def bind_task(args: tuple | list | None = None, **_: Any) -> None:
    """A task starts: every predictq task takes its job id first."""
    clear_context()
    job_id = args[0] if args else None
    if isinstance(job_id, str):
        bind_context(job_id=job_id)


def unbind_task(**_: Any) -> None:
    """A task ended (after Celery logged its outcome): lines between tasks belong to no job."""
    clear_context()

"""Logging for API and workers: one JSON object per line, tagged with the request or job it serves.

The API sets a request id per request and the worker a job id per task, in context
variables; a filter on predictq's handler copies them onto every record it writes, so a
library's log line (gunicorn's, Celery's) carries them as well as predictq's own.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.settings import LogFormat, Settings

CONTEXT_FIELDS = ("request_id", "job_id", "model_version")
_CONTEXT: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"predictq_{name}", default=None) for name in CONTEXT_FIELDS
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_context(**values: str | None) -> None:
    """Tag the log records of this thread (request) or task from now on: ``request_id``, ``job_id``,
    ``model_version``. ``None`` removes a tag."""
    for name, value in values.items():
        _CONTEXT[name].set(value)


def clear_context() -> None:
    """Drop every tag: a request or task is over."""
    for variable in _CONTEXT.values():
        variable.set(None)


def current_context() -> dict[str, str]:
    """The tags set now, without the unset ones."""
    return {name: value for name, variable in _CONTEXT.items() if (value := variable.get()) is not None}


class ContextFilter(logging.Filter):
    """Copy the current tags onto each record; a value given with ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_context().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


# What every LogRecord carries; anything else on a record is an extra (``extra=`` or a tag).
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then tags and extras.

    Written by hand with orjson: the request line is logged on every answer, and a generic
    JSON formatter made it a fifth of a one-row prediction.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson refuses (an integer beyond 64 bits) still makes a line
            return json.dumps(entry, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """One readable line, tags in brackets after the message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        tags = " ".join(f"{name}={value}" for name in CONTEXT_FIELDS if (value := getattr(record, name, None)))
        line = super().formatMessage(record)
        return f"{line} [{tags}]" if tags else line


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonLineFormatter() if log_format == "json" else TextFormatter()


class PredictqHandler(logging.StreamHandler):
    """The one handler predictq installs on the root logger: standard error, formatted and tagged.

    It writes to ``sys.__stderr__``, not ``sys.stderr``: Celery replaces ``sys.stderr`` with
    a proxy that logs, which would feed every line back into logging.
    """

    def __init__(self, log_format: LogFormat = "json") -> None:
        super().__init__(sys.__stderr__)
        self.setFormatter(make_formatter(log_format))
        self.addFilter(ContextFilter())


def configure_logging(settings: Settings) -> None:
    """Send every log record at ``settings.log_level`` or above to standard error, one per line.

    Safe to call again (each app built, each worker started): predictq's previous handler is
    replaced, and handlers others installed on the root logger (pytest's) are left alone.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, PredictqHandler)]:
        root.removeHandler(handler)
        handler.close()
    root.addHandler(PredictqHandler(settings.log_format))
    root.setLevel(settings.log_level)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The same configuration as a ``logging.config.dictConfig`` dict (gunicorn's ``logconfig_dict``).

    gunicorn's own loggers lose their handlers and pass their records to the root logger,
    so its startup, worker and error lines come out formatted like everything else. Its
    access lines (INFO) are dropped: the app logs each request itself, with its request id.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": settings.log_level, "handlers": ["predictq"]},
        "loggers": {
            "gunicorn.error": {"level": settings.log_level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
        "handlers": {"predictq": {"()": PredictqHandler, "log_format": settings.log_format}},
        "formatters": {},
    }

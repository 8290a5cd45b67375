"""Request ids, and one log line per request.

The id comes from the caller's ``X-Request-ID`` when it is short and plain, else it is
made here; it is returned in the same header, tags every log line written while the
request runs, and is stored on any job the request creates, whose tasks log it too.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

from shared.logs import bind_context, clear_context

REQUEST_ID_HEADER = "X-Request-ID"
# Short and plain: safe in a header, a log line, a Redis field and a shell.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# Probes and scrapes arrive every few seconds; at DEBUG they do not bury the traffic.
QUIET_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "metrics.show_metrics"})

log = logging.getLogger(__name__)


def request_id_from(header: str | None) -> str:
    """The caller's id when it fits ``REQUEST_ID_PATTERN``, else a new one."""
    if header and REQUEST_ID_PATTERN.fullmatch(header):
        return header
    if header:
        log.debug("replacing an X-Request-ID that is too long or has unusual characters: %.80r", header)
    return uuid.uuid4().hex


def request_id() -> str | None:
    """The current request's id; None outside a request."""
    return g.get("request_id") if has_request_context() else None


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_end)


def _begin() -> None:
    g.request_started = time.perf_counter()
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    clear_context()
    bind_context(request_id=g.request_id)


def _finish(response: Response) -> Response:
    if "request_id" not in g:  # a hook before ours failed: the answer still gets an id
        _begin()
    response.headers[REQUEST_ID_HEADER] = g.request_id
    duration_ms = (time.perf_counter() - g.request_started) * 1000
    log.log(
        logging.DEBUG if request.endpoint in QUIET_ENDPOINTS else logging.INFO,
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "path": request.path,
            "endpoint": request.endpoint,
            "status": response.status_code,
            "duration_ms": round(duration_ms, 2),
        },
    )
    return response


def _end(_exc: BaseException | None) -> None:
    clear_context()

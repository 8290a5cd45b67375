"""The only place that builds error bodies: RFC 9457 problem details, always JSON."""

from __future__ import annotations

import logging

from flask import Flask, Response, has_request_context, json, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared import errors as domain

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: dict[type[domain.PredictqError], int] = {
    domain.BadRequest: 400,
    domain.Unauthorized: 401,
    domain.Forbidden: 403,
    domain.ModelNotFound: 404,
    domain.JobNotFound: 404,
    domain.JobNotFinished: 409,
    domain.PayloadTooLarge: 413,
    domain.UnsupportedMediaType: 415,
    domain.InvalidInput: 422,
    domain.TooManyRequests: 429,
    domain.TrainingError: 422,
    domain.NoActiveModel: 503,
    # The server is fine; the version asked for is not servable: a conflict with its stored state.
    domain.ModelIntegrityError: 409,
    domain.ServiceUnavailable: 503,
}


def problem(
    status: int, title: str, detail: str, errors: list[dict] | None = None, kind: str | None = None
) -> Response:
    body = {
        "type": f"urn:predictq:problem:{kind}" if kind else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")


def handle_domain_error(exc: domain.PredictqError) -> Response:
    status = next((s for cls, s in STATUS_BY_ERROR.items() if isinstance(exc, cls)), 500)
    response = problem(status, exc.title, exc.detail, [e.to_dict() for e in exc.errors], _kebab(type(exc).__name__))
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def handle_http_error(exc: HTTPException) -> Response:
    # Keep werkzeug's status and headers (Allow, Retry-After...); replace only the HTML body.
    response = exc.get_response()
    detail = exc.description or exc.name
    if isinstance(exc, RequestEntityTooLarge) and has_request_context() and request.max_content_length:
        # werkzeug's text does not say what the limit is, so the client cannot tell how much to cut.
        detail = f"The request body is larger than the {request.max_content_length} bytes accepted here"
    body = problem(exc.code or 500, exc.name, detail)
    response.data = body.get_data()
    response.content_type = PROBLEM_JSON
    return response


def handle_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return problem(500, "Internal server error", "The server failed to handle this request; the error was logged")


def handle_queue_down(exc: RedisError) -> Response:
    log.error("job store unreachable: %s", exc)
    return handle_domain_error(domain.ServiceUnavailable("The job queue (Redis) cannot be reached; try again shortly"))


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(domain.PredictqError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(RedisError, handle_queue_down)
    app.register_error_handler(Exception, handle_unexpected)

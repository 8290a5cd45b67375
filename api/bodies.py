"""Reading request bodies; shape errors become BadRequest, never a 500."""

from __future__ import annotations

from typing import Any

from flask import request

from api.json_provider import loads_body
from shared.errors import BadRequest, FieldError, UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"


def is_json_media_type(mimetype: str) -> bool:
    """``application/json`` or a structured-syntax ``application/<name>+json``."""
    kind, _, subtype = mimetype.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def require_json_media_type() -> None:
    """Refuse a body that does not say it is JSON.

    A web page may send ``text/plain``, ``application/x-www-form-urlencoded`` or
    ``multipart/form-data`` to any origin without a CORS preflight; ``application/json`` needs
    one, which this API never grants. Reading only JSON-typed bodies keeps a page in a browser
    from posting to a service on the developer's loopback address.
    """
    if not is_json_media_type(request.mimetype):
        sent = request.mimetype or "no Content-Type"
        raise UnsupportedMediaType(
            f"The body must be sent as {JSON_MEDIA_TYPE} (got {sent}); add the header 'Content-Type: {JSON_MEDIA_TYPE}'"
        )


def read_body() -> bytes:
    """The whole body, or RequestEntityTooLarge when it is over the request's limit.

    werkzeug stops reading a body without Content-Length (chunked) at the limit and hands
    back what it read; one more read raises, instead of the cut body failing as bad JSON.
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        request.stream.read(1)
    return data


def json_object() -> dict[str, Any]:
    require_json_media_type()
    try:
        body = loads_body(read_body())
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        body = None
    if body is None:  # an empty body, and a bare null, are refused alike
        raise BadRequest("The request body is not valid JSON")
    if not isinstance(body, dict):
        raise BadRequest(f"Expected a JSON object, got {type(body).__name__}")
    return body


def instances_of(body: dict[str, Any]) -> list:
    if "instances" not in body:
        raise BadRequest("Expected a JSON object with an 'instances' list: {\"instances\": [{...}, ...]}")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list of objects, one per row")
    return instances


def require_text(options: dict) -> None:
    """Refuse a JSON number, list or object where a name is expected, before it reaches a path or lookup."""
    wrong = [name for name, value in options.items() if value is not None and not isinstance(value, str)]
    if wrong:
        raise BadRequest(
            f"{', '.join(wrong)} must be a string", [FieldError("expected a string", field=name) for name in wrong]
        )

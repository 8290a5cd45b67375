"""Reading request bodies; shape errors become BadRequest, never a 500."""

from __future__ import annotations

from typing import Any

from flask import request

from api.json_provider import loads_body
from shared.errors import BadRequest, FieldError


def json_object() -> dict[str, Any]:
    try:
        body = loads_body(request.get_data())
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

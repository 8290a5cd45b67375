"""Bearer-token checks for admin endpoints (and, when configured, for prediction)."""

from __future__ import annotations

import hmac

from flask import request

from api.services import services
from shared.errors import Unauthorized


def require_admin() -> None:
    expected = services().settings.resolved_admin_token()
    if expected is None:
        raise Unauthorized("Admin endpoints are disabled: no token is configured (set PREDICTQ_ADMIN_TOKEN)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("Send the admin token as 'Authorization: Bearer <token>'")


def require_client() -> None:
    """Prediction and job endpoints ask for the token only when the settings say so."""
    if services().settings.require_token_for_predict:
        require_admin()

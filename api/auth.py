"""Bearer tokens: the admin token may do everything; client tokens only what their scopes allow.

Client tokens (``PREDICTQ_CLIENT_TOKENS``) are asked for only when some are configured or
``PREDICTQ_REQUIRE_TOKEN_FOR_PREDICT`` is set; then prediction and jobs need a token with
that scope, and the read endpoints (models, metrics, the OpenAPI document) any valid token.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, request
from flask_limiter import Limiter, RateLimitExceeded

from api.services import services
from shared.errors import Forbidden, TooManyRequests, Unauthorized
from shared.settings import Settings

# What a client token or the admin token is known as in rate-limit keys and logs: never the token.
ADMIN_IDENTITY = "admin"


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def token_identity(given: str | None) -> tuple[str, frozenset[str] | None] | None:
    """Who ``given`` is and what it may do: ``("admin", None)`` (everything), ``("client:<id>",
    scopes)`` for a client token, None for no token or a wrong one."""
    if given is None:
        return None
    settings = services().settings
    admin = settings.resolved_admin_token()
    if admin is not None and _same(given, admin):
        return ADMIN_IDENTITY, None
    found = None
    for entry in settings.client_tokens:  # every entry compared, so timing does not tell which matched
        if _same(given, entry.token.get_secret_value()):
            found = entry
    if found is None:
        return None
    digest = hashlib.sha256(given.encode()).hexdigest()[:16]
    return f"client:{digest}", found.scopes


def require_admin() -> None:
    expected = services().settings.resolved_admin_token()
    if expected is None:
        raise Unauthorized("Admin endpoints are disabled: no token is configured (set PREDICTQ_ADMIN_TOKEN)")
    given = bearer_token()
    if given is None or not _same(given, expected):
        raise Unauthorized("Send the admin token as 'Authorization: Bearer <token>'")


def require_client(scope: str | None = None) -> None:
    """A token allowing ``scope`` (None: any valid token), when the settings ask for tokens."""
    if not services().settings.client_auth_required:
        return
    identity = token_identity(bearer_token())
    if identity is None:
        raise Unauthorized("Send a client token (or the admin token) as 'Authorization: Bearer <token>'")
    _, scopes = identity
    if scope is not None and scopes is not None and scope not in scopes:
        raise Forbidden(f"This token may not use {scope!r}; its scopes are {', '.join(sorted(scopes))}")


def rate_limit_key() -> str:
    """Whom a request is counted against: its valid token, else its address."""
    identity = token_identity(bearer_token())
    return identity[0] if identity else f"address:{request.remote_addr}"


def _over_limit(exc: RateLimitExceeded):
    from api.errors import handle_domain_error

    # Flask-Limiter adds Retry-After and the X-RateLimit-* headers to this response after it.
    return handle_domain_error(
        TooManyRequests(f"This client sent more than {exc.limit.limit} requests here; try again shortly")
    )


def init_rate_limits(app: Flask, settings: Settings) -> None:
    """Per-client limits, off unless configured: /predict counted in this process (so it never
    needs Redis), /jobs in Redis (one count for every API process)."""
    limiters = []
    if settings.predict_rate_limit:
        local = Limiter(rate_limit_key, app=app, storage_uri="memory://", headers_enabled=True)
        local.limit(settings.predict_rate_limit)(app.blueprints["predict"])
        limiters.append(local)
    if settings.jobs_rate_limit:
        # Without Redis configured there is no job queue either; the count is then per process.
        shared = Limiter(rate_limit_key, app=app, storage_uri=settings.redis_url or "memory://", headers_enabled=True)
        shared.limit(settings.jobs_rate_limit)(app.blueprints["jobs"])
        limiters.append(shared)
    if limiters:
        app.register_error_handler(RateLimitExceeded, _over_limit)

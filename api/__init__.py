"""The HTTP API: an app factory and its blueprints."""

from __future__ import annotations

import redis
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api import metrics, request_log
from api.auth import init_rate_limits
from api.errors import register_error_handlers
from api.json_provider import OrjsonProvider
from api.services import Services
from shared.logs import configure_logging
from shared.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, redis_client: redis.Redis | None = None) -> Flask:
    """Build the Flask app. Settings are read from the environment when not given;
    ``redis_client`` replaces the connection to ``settings.redis_url`` (tests)."""
    settings = settings or load_settings()
    configure_logging(settings)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if settings.proxy_hops:
        # Only as many hops as are configured: a client could send X-Forwarded-* of its own.
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
    services = Services.from_settings(settings, redis_client)
    services.active.refresh()  # load the model now, not on the first request
    app.extensions["predictq"] = services
    request_log.init_app(app)
    metrics.init_app(app, services)

    from api.routes import docs, health, jobs, models, predict, retrain

    for module in (health, models, predict, jobs, retrain, docs):
        app.register_blueprint(module.bp)
    init_rate_limits(app, settings)
    register_error_handlers(app)
    return app

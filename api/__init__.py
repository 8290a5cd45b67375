"""The HTTP API: an app factory and its blueprints."""

from __future__ import annotations

from flask import Flask

from api.errors import register_error_handlers
from api.services import Services
from shared.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app. Settings are read from the environment when not given."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    app.extensions["predictq"] = Services.from_settings(settings)

    from api.routes import health, models, predict

    app.register_blueprint(health.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(predict.bp)
    register_error_handlers(app)
    return app

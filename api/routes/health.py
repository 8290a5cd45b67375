"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from api.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    model = services().active.get()  # NoActiveModel -> 503 with the reason
    return {"status": "ready", "model_version": model.version}

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
    """Ready while a model is served (``/predict`` needs nothing else); ``components`` says what else works.

    Redis and the workers are reported, not required: without them ``/jobs`` and ``/retrain``
    answer 503, while this process still answers ``/predict``, so it stays in a load balancer.
    """
    svc = services()
    model = svc.active.get()  # NoActiveModel -> 503 with the reason
    redis_state = svc.redis_state()
    if redis_state["status"] == "ok":
        workers = svc.worker_state()
    else:
        workers = {"status": "unknown", "detail": "Redis, through which workers are reached, is not answering"}
    return {
        "status": "ready",
        "model_version": model.version,
        "components": {
            "model": {"status": "ok", "version": model.version},
            "redis": redis_state,
            "workers": workers,
        },
    }

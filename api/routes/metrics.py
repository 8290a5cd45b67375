"""GET /metrics: Prometheus metrics of every API worker process, plus job and queue counts from Redis."""

from __future__ import annotations

from flask import Blueprint, Response, request
from prometheus_client.exposition import choose_encoder

from api.auth import require_client
from api.metrics import metrics_of

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def show_metrics():
    require_client()
    # Prometheus' text format, or OpenMetrics when the scraper asks for it.
    encode, content_type = choose_encoder(request.headers.get("Accept"))
    return Response(encode(metrics_of().scraped), content_type=content_type)

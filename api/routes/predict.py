"""POST /predict: small requests answered at once, without Redis."""

from __future__ import annotations

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.auth import require_client
from api.bodies import instances_of, json_object, require_text
from api.metrics import record_prediction
from api.routes.jobs import accepted
from api.services import services
from api.submission import submit_instances
from shared.errors import PayloadTooLarge
from shared.logs import bind_context
from shared.serving import predict_instances
from shared.settings import JOBS_SCOPE, PREDICT_SCOPE

bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    require_client(PREDICT_SCOPE)
    svc = services()
    # Set before the body is read: a large batch is refused unread instead of parsed into memory.
    request.max_content_length = svc.settings.predict_max_bytes
    try:
        body = json_object()
    except RequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"The body is larger than the {svc.settings.predict_max_bytes} bytes POST /predict reads "
            "(PREDICTQ_PREDICT_MAX_BYTES); send large batches to POST /jobs (JSON rows or a CSV file)"
        ) from exc
    instances = instances_of(body)
    if len(instances) > svc.settings.sync_max_rows:
        # Too many rows to answer at once: queued exactly as POST /jobs would, so it takes that scope too.
        require_client(JOBS_SCOPE)
        return accepted(submit_instances(svc, instances, body.get("model_version"), body.get("id_column")))
    require_text({"model_version": body.get("model_version")})
    model = svc.model(body.get("model_version"))
    bind_context(model_version=model.version)
    scored, answer = predict_instances(model, instances)
    record_prediction(model.version, scored.prepared.rows, scored.prepared.quality_summary())
    svc.traffic.record(model, scored.prepared)
    return answer

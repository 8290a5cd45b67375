"""POST /predict: small requests answered at once, without Redis."""

from __future__ import annotations

from flask import Blueprint

from api.bodies import instances_of, json_object
from api.services import services
from shared.errors import PayloadTooLarge
from shared.inputs import instances_to_frame
from shared.serving import prediction_response

bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    instances = instances_of(json_object())
    limit = services().settings.sync_max_rows
    if len(instances) > limit:
        raise PayloadTooLarge(
            f"{len(instances)} rows is more than the {limit} answered at once "
            "(PREDICTQ_SYNC_MAX_ROWS); submit them as a batch job"
        )
    model = services().active.get()
    frame = instances_to_frame(instances, model.schema, allowed_extra={model.manifest["target"]})
    return prediction_response(model, frame)

"""Retraining on the workers, and switching the active version by hand."""

from __future__ import annotations

from flask import Blueprint, request

from api.auth import require_admin
from api.bodies import json_object
from api.json_provider import loads_body
from api.routes.jobs import accepted
from api.services import services
from api.submission import submit_retrain
from shared.errors import BadRequest

bp = Blueprint("retrain", __name__)


@bp.post("/retrain")
def retrain():
    require_admin()
    svc = services()
    if request.mimetype == "multipart/form-data":
        request.max_content_length = svc.settings.max_upload_bytes
        upload = request.files.get("file")
        if upload is None:
            raise BadRequest("multipart/form-data retraining needs the CSV in a field named 'file'")
        fields = request.form.to_dict()
        try:
            fields["params"] = loads_body(fields["params"]) if fields.get("params") else {}
        except ValueError as exc:  # malformed, or nested deeper than a parser goes
            raise BadRequest("'params' must be a JSON object") from exc
        return accepted(submit_retrain(svc, fields, upload.stream))
    # An empty body means "all defaults"; a chunked one has no Content-Length but is still read.
    body = json_object() if request.get_data(cache=True) else {}
    return accepted(submit_retrain(svc, body, None))


@bp.post("/models/<version>/activate")
def activate(version: str):
    require_admin()
    store = services().store
    store.load(version)  # refuse a version that would not load: bad checksum, other sklearn
    store.activate(version)
    return {"active_version": version}

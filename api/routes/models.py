"""Model versions: list and inspect."""

from __future__ import annotations

from flask import Blueprint

from api.services import services

bp = Blueprint("models", __name__, url_prefix="/models")


def _summary(manifest: dict, active: str | None) -> dict:
    return {
        "version": manifest["version"],
        "created_at": manifest["created_at"],
        "task": manifest["task"],
        "target": manifest["target"],
        "estimator": manifest["estimator"]["name"],
        "metrics": manifest["metrics"]["holdout"],
        "active": manifest["version"] == active,
    }


@bp.get("")
def list_models():
    store = services().store
    active = store.active_version()
    manifests = [store.manifest(v) for v in reversed(store.versions())]
    return {"active_version": active, "models": [_summary(m, active) for m in manifests]}


@bp.get("/<version>")
def show_model(version: str):
    store = services().store
    return {**store.manifest(version), "active": version == store.active_version()}

"""Model versions: list and inspect."""

from __future__ import annotations

from pathlib import PurePath

from flask import Blueprint

from api.auth import require_client
from api.report import render_report
from api.services import services
from shared.traffic import load_traffic

bp = Blueprint("models", __name__, url_prefix="/models")


def serving_of(manifest: dict) -> dict:
    """Which engine answers for the version, and why (recorded at training)."""
    serving = manifest.get("serving") or {
        "path": "sklearn",
        "reason": "saved before the compiled path existed: scored by its scikit-learn pipeline",
    }
    return {"serving_path": serving["path"], "serving_reason": serving["reason"]}


def public_manifest(manifest: dict) -> dict:
    """The manifest as the API shows it: no path on the training host, no holdout target values.

    The training file is named by its base name; a regressor's holdout points (real target
    values, plotted on the report page server-side) are counted, not listed.
    """
    shown = dict(manifest)
    data = dict(shown.get("training_data") or {})
    if "path" in data:
        data["file"] = PurePath(data.pop("path")).name
    shown["training_data"] = data
    diagnostics = shown.get("diagnostics") or {}
    if "actual" in diagnostics:
        shown["diagnostics"] = {"holdout_points": len(diagnostics["actual"])}
    return shown


def _summary(manifest: dict, active: str | None) -> dict:
    return {
        "version": manifest["version"],
        "created_at": manifest["created_at"],
        "task": manifest["task"],
        "target": manifest["target"],
        "estimator": manifest["estimator"]["name"],
        "metrics": manifest["metrics"]["holdout"],
        **serving_of(manifest),
        "active": manifest["version"] == active,
    }


@bp.get("")
def list_models():
    require_client()
    store = services().store
    active = store.active_version()
    manifests = [store.manifest(v) for v in reversed(store.versions())]
    return {"active_version": active, "models": [_summary(m, active) for m in manifests]}


@bp.get("/<version>")
def show_model(version: str):
    require_client()
    store = services().store
    manifest = public_manifest(store.manifest(version))
    integrity = store.integrity(version)
    return {**manifest, **serving_of(manifest), "integrity": integrity, "active": version == store.active_version()}


@bp.get("/<version>/report")
def model_report(version: str):
    require_client()
    svc = services()
    manifest = svc.store.manifest(version)
    svc.traffic.flush()  # this process's latest counts, so the page is current
    html = render_report(
        manifest, load_traffic(svc.settings.traffic_dir, version), version == svc.store.active_version()
    )
    return html, 200, {"Content-Type": "text/html; charset=utf-8"}

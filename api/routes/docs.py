"""GET /openapi.json and GET /docs: the API's description and Swagger UI to browse it.

Swagger UI's files come from the installed ``flask-swagger-ui`` wheel and are served from
here, so the page works offline and loads nothing from another host.
"""

from __future__ import annotations

import hashlib
import json
import threading
from html import escape
from importlib.metadata import version
from importlib.resources import files

from flask import Blueprint, current_app, request, send_file, url_for
from werkzeug.exceptions import NotFound

from api.auth import require_client
from api.openapi import build_openapi
from api.services import services
from shared.errors import NoActiveModel

bp = Blueprint("docs", __name__)

SWAGGER_UI_DIST = files("flask_swagger_ui") / "dist"
SWAGGER_UI_VERSION = version("flask-swagger-ui")
# Only these files are served: a fixed list, so no request names a path of its own.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
ASSET_MAX_AGE_S = 24 * 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>predictq API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon32}" sizes="32x32">
  <link rel="icon" type="image/png" href="{icon16}" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script>
    window.onload = function () {{
      // validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
      window.ui = SwaggerUIBundle({{url: {spec}, dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null}});
    }};
  </script>
</body>
</html>
"""


class DocumentCache:
    """The serialised document of the latest model version seen: rebuilt only when it changes."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._body = b""
        self._etag = ""
        self._lock = threading.Lock()

    def get(self, key: str, build) -> tuple[bytes, str]:
        with self._lock:
            if key != self._key:
                self._body = build()
                self._etag = hashlib.sha256(self._body).hexdigest()[:32]
                self._key = key
            return self._body, self._etag


@bp.get("/openapi.json")
def openapi_document():
    require_client()
    svc = services()
    try:
        model = svc.active.get()
    except NoActiveModel:
        model = None  # the document still describes every route, with generic rows
    cache = current_app.extensions.setdefault("predictq.openapi", DocumentCache())
    body, etag = cache.get(
        model.version if model else "", lambda: current_app.json.dumps(build_openapi(model, svc.settings)).encode()
    )
    response = current_app.response_class(body, mimetype="application/json")
    response.set_etag(etag)
    return response.make_conditional(request)


@bp.get("/docs")
def docs_page():
    def asset(name: str) -> str:
        # The version in the query string makes browsers fetch new files after an upgrade.
        return escape(url_for("docs.docs_asset", name=name, v=SWAGGER_UI_VERSION))

    page = PAGE.format(
        css=asset("swagger-ui.css"),
        icon32=asset("favicon-32x32.png"),
        icon16=asset("favicon-16x16.png"),
        bundle=asset("swagger-ui-bundle.js"),
        spec=json.dumps(url_for("docs.openapi_document")),
    )
    return current_app.response_class(page, mimetype="text/html")


@bp.get("/docs/assets/<name>")
def docs_asset(name: str):
    if name not in ASSETS:
        raise NotFound(f"No documentation asset {name!r}")
    return send_file(SWAGGER_UI_DIST / name, mimetype=ASSETS[name], max_age=ASSET_MAX_AGE_S)

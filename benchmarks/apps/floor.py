"""The floor: what Flask and gunicorn cost with no model at all.

It parses the same JSON body the model servers are sent and answers a constant, so
whatever a model server spends above this is its own work.
"""

from __future__ import annotations

from flask import Flask, request

CONSTANT_ANSWER = {"predictions": [0]}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/predict")
    def predict():
        request.get_json()["instances"]  # parsed and looked into, as a model server must
        return CONSTANT_ANSWER

    return app

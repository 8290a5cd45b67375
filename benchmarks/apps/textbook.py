"""The textbook baseline: the Flask app a tutorial writes around a saved scikit-learn pipeline.

Load the pickled pipeline once, turn the JSON rows into a DataFrame, call
``predict_proba``. It is pointed at predictq's own ``model.joblib``, so both serve the
same fitted pipeline.
"""

from __future__ import annotations

import joblib
import pandas as pd
from flask import Flask, request


def create_app(model_path: str) -> Flask:
    pipeline = joblib.load(model_path)
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/predict")
    def predict():
        frame = pd.DataFrame(request.get_json()["instances"])
        probabilities = pipeline.predict_proba(frame)
        labels = pipeline.classes_[probabilities.argmax(axis=1)]
        return {"predictions": labels.tolist(), "probabilities": probabilities.tolist()}

    return app

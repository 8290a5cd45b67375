"""The model report page and the traffic counts behind it."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd

from shared.inputs import prepare
from shared.traffic import UNSEEN, TrafficMonitor, load_traffic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_classifier_report_is_html_with_metrics_confusion_matrix_and_feature_plots(
    client, save_model, species_model
) -> None:
    """A classifier's report shows its holdout metrics and two real PNG plots, all inline."""
    version = save_model(species_model)
    response = client.get(f"/models/{version}/report")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert version in html and "macro_f1" in html and 'id="quality-plot"' in html
    images = _images(html)
    assert len(images) == 2 and all(image.startswith(PNG_SIGNATURE) for image in images)
    assert "http://" not in html and "https://" not in html, "the page must load nothing from elsewhere"


def test_regressor_report_plots_residuals(client, save_model, mass_model) -> None:
    """A regressor's report shows RMSE and a predicted-vs-actual plot instead of a confusion matrix."""
    version = save_model(mass_model)
    html = client.get(f"/models/{version}/report").get_data(as_text=True)
    assert "rmse" in html and "Holdout predictions" in html
    assert len(_images(html)) == 2


def test_report_counts_predict_traffic(client, save_model, species_model) -> None:
    """Rows sent to /predict are counted per version and named on the report."""
    version = save_model(species_model)
    row = {"island": "Biscoe", "bill_length_mm": 45.1, "bill_depth_mm": 14.5, "flipper_length_mm": 420,
           "body_mass_g": None, "sex": "neither", "year": 2008}  # fmt: skip
    assert client.post("/predict", json={"instances": [row] * 3}).status_code == 200
    html = client.get(f"/models/{version}/report").get_data(as_text=True)
    assert "3 row(s) so far" in html


def test_report_of_unknown_version_is_a_404_problem(client) -> None:
    """An unknown version gets the usual problem body, not an HTML error page."""
    response = client.get("/models/nope/report")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["title"] == "Model not found"


def test_traffic_monitor_bins_values_like_training_and_merges_processes(
    tmp_path, store, save_model, species_model
) -> None:
    """Counts land in the training histogram bins, beyond-range and unseen values apart; files add up."""
    model = store.load(save_model(species_model))
    edges = model.schema["flipper_length_mm"].stats["histogram"]["edges"]
    frame = pd.DataFrame(
        {
            "island": ["Biscoe", "Dream", "Atlantis"],
            "bill_length_mm": [40.0, 41.0, 42.0],
            "bill_depth_mm": [15.0, 16.0, None],
            "flipper_length_mm": [edges[0], edges[-1] + 100, edges[0] - 1],
            "body_mass_g": [4000, 4100, 4200],
            "sex": ["male", None, "female"],
            "year": [2007, 2008, 2009],
        }
    )
    prepared = prepare(frame, model.schema, "warn")
    first, second = TrafficMonitor(tmp_path, flush_interval_s=3600), TrafficMonitor(tmp_path, flush_interval_s=3600)
    second.process = "other-host-1"
    first.record(model, prepared)
    second.record(model, prepared)
    first.flush()
    second.flush()
    total = load_traffic(tmp_path, model.version)
    assert total["rows"] == 6
    flipper = total["features"]["flipper_length_mm"]
    assert (flipper["below"], flipper["above"], sum(flipper["bins"])) == (2, 2, 2)
    assert flipper["bins"][0] == 2
    assert total["features"]["island"]["levels"] == {"Biscoe": 2, "Dream": 2, UNSEEN: 2}
    assert total["features"]["sex"]["missing"] == 2
    assert total["features"]["bill_depth_mm"]["missing"] == 2
    assert np.sum(total["features"]["bill_length_mm"]["bins"]) == 6


def test_no_traffic_means_no_counts(tmp_path) -> None:
    """A version nobody has sent rows to has no traffic record."""
    assert load_traffic(tmp_path, "20260101T000000000000Z-abcdef") is None

"""JSON bodies are read only when they say they are JSON: a web page cannot post one cross-origin.

Browsers send text/plain, form-encoded and multipart bodies to any origin without asking;
application/json needs a CORS preflight, which the API never grants.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace

import fakeredis
import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.settings import Settings
from shared.training import TrainedModel

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ROW = {
    "island": "Dream",
    "bill_length_mm": 49.0,
    "bill_depth_mm": 18.5,
    "flipper_length_mm": 196,
    "body_mass_g": 3700,
    "sex": "female",
    "year": 2009,
}
BODY = json.dumps({"instances": [ROW]})


@pytest.fixture
def client(settings: Settings, species_model: TrainedModel, save_model: Callable[..., str]) -> FlaskClient:
    save_model(species_model)
    app = create_app(settings.model_copy(update={"admin_token": TOKEN}), redis_client=fakeredis.FakeRedis())
    app.testing = True
    # Queued tasks are recorded, not sent: no broker is needed to see a job accepted.
    app.extensions["predictq"]._celery = SimpleNamespace(send_task=lambda *args, **kwargs: None)
    return app.test_client()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("path", ["/predict", "/jobs", "/retrain"])
def test_json_of_another_media_type_is_415(
    client: FlaskClient, problem_of, path: str, content_type: str | None
) -> None:
    """A JSON body under any other media type (or none) is a 415 problem naming the header to send."""
    response = client.post(path, data=BODY, content_type=content_type, headers=ADMIN)

    problem = problem_of(response, 415)
    assert problem["title"] == "Unsupported media type"
    assert problem["type"] == "urn:predictq:problem:unsupported-media-type"
    assert "Content-Type: application/json" in problem["detail"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/vnd.predictq+json"]
)
def test_json_media_types_are_read(client: FlaskClient, content_type: str) -> None:
    """application/json, with parameters or as a structured +json type, is read as before."""
    response = client.post("/predict", data=BODY, content_type=content_type)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(response.get_json()["predictions"]) == 1


def test_flask_json_argument_is_read(client: FlaskClient) -> None:
    """Clients that post with a JSON helper (Flask's json=, requests' json=) send application/json."""
    assert client.post("/jobs", json={"instances": [ROW]}).status_code == 202


def test_retrain_without_a_body_needs_no_media_type(client: FlaskClient) -> None:
    """An empty retrain body means every default: there is no JSON to type."""
    assert client.post("/retrain", headers=ADMIN).status_code == 202


def test_csv_and_multipart_jobs_are_unaffected(client: FlaskClient, penguins_csv) -> None:
    """Uploads keep their own media types."""
    csv_body = penguins_csv.read_bytes()
    assert client.post("/jobs", data=csv_body, content_type="text/csv").status_code == 202
    with open(penguins_csv, "rb") as upload:
        response = client.post("/jobs", data={"file": (upload, "rows.csv")}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)

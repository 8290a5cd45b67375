"""Behind a TLS proxy the job links name the proxy's scheme and host, when (and only when) configured."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import fakeredis
import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.settings import Settings
from shared.training import TrainedModel

ROW = {
    "island": "Dream",
    "bill_length_mm": 49.0,
    "bill_depth_mm": 18.5,
    "flipper_length_mm": 196,
    "body_mass_g": 3700,
    "sex": "female",
    "year": 2009,
}
FORWARDED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "predict.example.com",
    "X-Forwarded-Port": "443",
}


@pytest.fixture
def make(settings: Settings, species_model: TrainedModel, save_model: Callable[..., str]) -> Callable[..., FlaskClient]:
    save_model(species_model)

    def build(**changes: object) -> FlaskClient:
        app = create_app(settings.model_copy(update=changes), redis_client=fakeredis.FakeRedis())
        app.testing = True
        app.extensions["predictq"]._celery = SimpleNamespace(send_task=lambda *args, **kwargs: None)
        return app.test_client()

    return build


def test_forwarded_headers_shape_job_urls_when_trusted(make: Callable[..., FlaskClient]) -> None:
    """With one trusted hop, status_url and Location are the public https URL the proxy serves."""
    response = make(proxy_hops=1).post("/jobs", json={"instances": [ROW]}, headers=FORWARDED)

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert response.get_json()["status_url"] == f"https://predict.example.com/jobs/{job_id}"
    assert response.headers["Location"] == f"https://predict.example.com/jobs/{job_id}"


def test_forwarded_headers_are_ignored_by_default(make: Callable[..., FlaskClient]) -> None:
    """Without a configured proxy a client's own X-Forwarded-* headers change nothing."""
    response = make().post("/jobs", json={"instances": [ROW]}, headers=FORWARDED)

    assert response.get_json()["status_url"].startswith("http://localhost/jobs/")


def test_proxy_hops_defaults_to_off() -> None:
    assert Settings().proxy_hops == 0

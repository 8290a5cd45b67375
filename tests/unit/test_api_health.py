"""GET /healthz and GET /readyz."""

from __future__ import annotations

from flask.testing import FlaskClient

from shared.training import TrainedModel


def test_healthz_is_ok_without_a_model(client: FlaskClient) -> None:
    """Liveness does not depend on a model being trained."""
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_names_the_served_version(client: FlaskClient, species_model: TrainedModel, save_model) -> None:
    """Readiness is 200 once a model is active, and says which one is served."""
    version = save_model(species_model)

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "model_version": version}

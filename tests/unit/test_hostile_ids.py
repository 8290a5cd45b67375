"""Model versions that are no version: a NUL byte, a path, a name too long for any file system.

Each is a 404 problem naming no file, never a 500 from the path handling underneath.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

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
HOSTILE = {
    "nul": "abc\x00def",
    "long": "7" * 4000,
    "dot-dot": "..",
    "dot-file": ".ACTIVE",
    "traversal": "../models",
    "active-pointer": "ACTIVE",
}


# ".." and names with "/" resolve to other URLs before any route sees them.
ROUTED = {name: v for name, v in HOSTILE.items() if "/" not in v and v != ".."}


@pytest.fixture
def admin_client(make_client: Callable[..., FlaskClient], species_model: TrainedModel, save_model) -> FlaskClient:
    save_model(species_model)
    return make_client(admin_token=TOKEN)


def _check_not_found(response, problem_of) -> None:
    body = problem_of(response, 404)
    assert body["detail"].startswith("No model version")
    assert len(body["detail"]) < 120  # a 4,000-character name is cut, not echoed whole


@pytest.mark.parametrize("version", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("path", ["/models/{}", "/models/{}/report"])
def test_reading_a_hostile_version_is_404(admin_client: FlaskClient, problem_of, version: str, path: str) -> None:
    response = admin_client.get(path.format(version.replace("/", "%2F")))

    if version in ROUTED.values():
        _check_not_found(response, problem_of)
    else:  # resolved to another URL before any route: a 404 problem all the same
        problem_of(response, 404)


@pytest.mark.parametrize("version", ROUTED.values(), ids=ROUTED.keys())
def test_activating_a_hostile_version_is_404(admin_client: FlaskClient, problem_of, version: str) -> None:
    response = admin_client.post(f"/models/{version}/activate", headers=ADMIN)

    _check_not_found(response, problem_of)


@pytest.mark.parametrize("version", HOSTILE.values(), ids=HOSTILE.keys())
def test_predicting_with_a_hostile_version_is_404(admin_client: FlaskClient, problem_of, version: str) -> None:
    response = admin_client.post("/predict", json={"instances": [ROW], "model_version": version})

    _check_not_found(response, problem_of)

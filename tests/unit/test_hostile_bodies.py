"""Bodies built to break a parser: nesting far deeper than any row, on every JSON endpoint.

Each is a 400 problem naming the body, never a 500 from a RecursionError.
"""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest
from flask.testing import FlaskClient

from api import create_app
from shared.settings import Settings
from shared.training import TrainedModel

TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DEEP_LIST = "[" * 100_000
DEEP_OBJECT = '{"a":' * 100_000
UNCLOSED_OBJECTS = '{"instances": [' + '{"x": ' * 5_000


@pytest.fixture
def client(settings: Settings, species_model: TrainedModel, save_model: Callable[..., str]) -> FlaskClient:
    save_model(species_model)
    app = create_app(settings.model_copy(update={"admin_token": TOKEN}), redis_client=fakeredis.FakeRedis())
    app.testing = True
    return app.test_client()


@pytest.mark.parametrize("body", [DEEP_LIST, DEEP_OBJECT, UNCLOSED_OBJECTS], ids=["lists", "objects", "unclosed"])
@pytest.mark.parametrize("path", ["/predict", "/jobs", "/retrain"])
def test_deeply_nested_json_is_400(client: FlaskClient, problem_of, path: str, body: str) -> None:
    response = client.post(path, data=body, content_type="application/json", headers=ADMIN)

    problem = problem_of(response, 400)
    assert problem["detail"] == "The request body is not valid JSON"


def test_deeply_nested_retrain_params_are_400(client: FlaskClient, problem_of, penguins_csv) -> None:
    """The params field of a multipart retrain is parsed by the same guarded parser."""
    with open(penguins_csv, "rb") as upload:
        response = client.post(
            "/retrain",
            data={"file": (upload, "penguins.csv"), "target": "species", "params": '{"a":' * 5_000 + "1" + "}" * 5_000},
            content_type="multipart/form-data",
            headers=ADMIN,
        )

    problem = problem_of(response, 400)
    assert problem["detail"] == "'params' must be a JSON object"

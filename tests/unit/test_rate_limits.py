"""Per-client rate limits on /predict and /jobs: off by default, a 429 problem when configured."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError

from api import create_app
from shared.settings import Settings
from shared.training import TrainedModel

TOKENS = "first-client-0123456789 second-client-0123456789"
ROW = {
    "island": "Dream",
    "bill_length_mm": 49.0,
    "bill_depth_mm": 18.5,
    "flipper_length_mm": 196,
    "body_mass_g": 3700,
    "sex": "female",
    "year": 2009,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def make(settings: Settings, species_model: TrainedModel, save_model: Callable[..., str]) -> Callable[..., Flask]:
    save_model(species_model)

    def build(**environment: str) -> Flask:
        configured = Settings(data_dir=settings.data_dir, model_check_interval_s=0, **environment)
        app = create_app(configured, redis_client=fakeredis.FakeRedis())
        app.testing = True
        app.extensions["predictq"]._celery = SimpleNamespace(send_task=lambda *args, **kwargs: None)
        return app

    return build


def predict(client: FlaskClient, token: str | None = None):
    return client.post("/predict", json={"instances": [ROW]}, headers=bearer(token) if token else {})


def test_no_limit_by_default(make: Callable[..., Flask]) -> None:
    client = make().test_client()
    assert all(predict(client).status_code == 200 for _ in range(30))


def test_predict_over_its_limit_is_a_429_problem(make: Callable[..., Flask], problem_of) -> None:
    client = make(predict_rate_limit="3/minute").test_client()
    assert [predict(client).status_code for _ in range(3)] == [200, 200, 200]

    response = predict(client)

    problem = problem_of(response, 429)
    assert problem["title"] == "Too many requests"
    assert problem["type"] == "urn:predictq:problem:too-many-requests"
    assert "3 per 1 minute" in problem["detail"]
    assert int(response.headers["Retry-After"]) > 0


def test_each_client_token_has_its_own_count(make: Callable[..., Flask], problem_of) -> None:
    client = make(predict_rate_limit="2/minute", client_tokens=TOKENS).test_client()
    first, second = TOKENS.split()
    assert [predict(client, first).status_code for _ in range(3)] == [200, 200, 429]
    assert predict(client, second).status_code == 200


def test_jobs_limit_leaves_predict_alone(make: Callable[..., Flask], problem_of) -> None:
    client = make(jobs_rate_limit="1/minute").test_client()
    assert client.post("/jobs", json={"instances": [ROW]}).status_code == 202

    problem_of(client.post("/jobs", json={"instances": [ROW]}), 429)
    assert predict(client).status_code == 200


def test_limits_count_where_documented(make: Callable[..., Flask]) -> None:
    """/predict counts in this process; /jobs in the Redis of redis_url."""
    app = make(predict_rate_limit="5/second", jobs_rate_limit="5/second", redis_url="redis://redis.invalid:6379/0")
    storages = sorted(type(limiter.storage).__name__ for limiter in app.extensions["limiter"])

    assert storages == ["MemoryStorage", "RedisStorage"]


def test_malformed_limit_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="not a rate limit"):
        Settings(predict_rate_limit="lots")


def test_document_lists_429_only_where_limited(make: Callable[..., Flask]) -> None:
    plain = make().test_client().get("/openapi.json").get_json()
    limited = make(predict_rate_limit="5/second").test_client().get("/openapi.json").get_json()

    assert "429" not in plain["paths"]["/predict"]["post"]["responses"]
    assert "429" in limited["paths"]["/predict"]["post"]["responses"]
    assert "429" not in limited["paths"]["/jobs"]["post"]["responses"]

"""GET /healthz and GET /readyz."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient
from redis.exceptions import TimeoutError as RedisTimeout

from api import create_app
from api.services import REDIS_REQUEST_TIMEOUT_S, request_redis_client
from shared.settings import Settings
from shared.training import TrainedModel


def test_healthz_is_ok_without_a_model(client: FlaskClient) -> None:
    """Liveness does not depend on a model being trained."""
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_names_the_served_version(client: FlaskClient, species_model: TrainedModel, save_model) -> None:
    """Readiness is 200 once a model is active, and says which one is served; with no queue configured
    (these settings name no Redis), it says so rather than calling Redis healthy."""
    version = save_model(species_model)

    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["model_version"] == version
    assert body["components"]["model"] == {"status": "ok", "version": version}
    assert body["components"]["redis"]["status"] == "unconfigured"
    assert "PREDICTQ_REDIS_URL" in body["components"]["redis"]["detail"]
    assert body["components"]["workers"]["status"] == "unknown"


class FrozenRedis(fakeredis.FakeRedis):
    """A Redis that times out on every call, as a SIGSTOPped server does once the socket timeout passes."""

    def execute_command(self, *args, **options):
        raise RedisTimeout("Timeout reading from socket")


@pytest.fixture
def queue_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, model_check_interval_s=0, broker_url="memory://", redis_url="redis://unused")


@pytest.mark.parametrize(
    ("redis_client", "redis_state", "workers"),
    [
        (fakeredis.FakeRedis(), {"status": "ok"}, {"status": "none", "count": 0}),
        (
            FrozenRedis(),
            {"status": "unreachable", "detail": "Redis did not answer (TimeoutError)"},
            {"status": "unknown", "detail": "Redis, through which workers are reached, is not answering"},
        ),
    ],
    ids=["redis-up-no-worker", "redis-frozen"],
)
def test_readyz_names_each_component_and_stays_ready_for_predict(
    queue_settings: Settings, species_model: TrainedModel, save_model, redis_client, redis_state, workers
) -> None:
    """/readyz is 200 while a model is served, whatever Redis and the workers do, and says what each is doing."""
    version = save_model(species_model)
    client = create_app(queue_settings, redis_client=redis_client).test_client()

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["components"] == {
        "model": {"status": "ok", "version": version},
        "redis": redis_state,
        "workers": workers,
    }


def test_api_redis_client_is_bounded_and_never_retried(queue_settings: Settings) -> None:
    """The API's job-store client waits at most REDIS_REQUEST_TIMEOUT_S to connect and per reply, once."""
    client = request_redis_client(queue_settings)
    kwargs = client.connection_pool.connection_kwargs

    assert kwargs["socket_timeout"] == REDIS_REQUEST_TIMEOUT_S <= 1.0
    assert kwargs["socket_connect_timeout"] == REDIS_REQUEST_TIMEOUT_S
    assert client.get_retry().get_retries() == 0

"""Client tokens: several, each scoped to predict and/or jobs; the admin token keeps every power.

With any client token configured (or PREDICTQ_REQUIRE_TOKEN_FOR_PREDICT), /predict, /jobs,
/models, /metrics and /openapi.json need a token; /healthz and /readyz never do.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import fakeredis
import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError

from api import create_app
from shared.settings import Settings
from shared.training import TrainedModel

ADMIN_TOKEN = "admin-token-0123456789"
PREDICT_ONLY = "predict-token-0123456789"
JOBS_ONLY = "jobs-token-0123456789"
OLD_AND_NEW = ("rotated-old-0123456789", "rotated-new-0123456789")
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
def make(settings: Settings, species_model: TrainedModel, save_model: Callable[..., str]) -> Callable[..., FlaskClient]:
    save_model(species_model)

    def build(**environment: str) -> FlaskClient:
        configured = Settings(data_dir=settings.data_dir, model_check_interval_s=0, **environment)
        app = create_app(configured, redis_client=fakeredis.FakeRedis())
        app.testing = True
        # Tasks are recorded nowhere and no worker answers a ping: no broker is needed.
        app.extensions["predictq"]._celery = SimpleNamespace(
            send_task=lambda *args, **kwargs: None, control=SimpleNamespace(ping=lambda **kwargs: [])
        )
        return app.test_client()

    return build


@pytest.fixture
def client(make: Callable[..., FlaskClient]) -> FlaskClient:
    tokens = f"{PREDICT_ONLY}:predict {JOBS_ONLY}:jobs;{OLD_AND_NEW[0]} {OLD_AND_NEW[1]}:predict,jobs"
    return make(admin_token=ADMIN_TOKEN, client_tokens=tokens)


def test_predict_scope_predicts_but_queues_no_job(client: FlaskClient, problem_of) -> None:
    """A predict token scores rows; the job endpoints answer 403 naming the missing scope."""
    assert client.post("/predict", json={"instances": [ROW]}, headers=bearer(PREDICT_ONLY)).status_code == 200

    problem = problem_of(client.post("/jobs", json={"instances": [ROW]}, headers=bearer(PREDICT_ONLY)), 403)
    assert problem["title"] == "Forbidden"
    assert "'jobs'" in problem["detail"] and "predict" in problem["detail"]
    problem_of(client.get("/jobs/" + "0" * 32, headers=bearer(PREDICT_ONLY)), 403)


def test_jobs_scope_queues_but_does_not_predict(client: FlaskClient, problem_of) -> None:
    response = client.post("/jobs", json={"instances": [ROW]}, headers=bearer(JOBS_ONLY))
    assert response.status_code == 202
    assert client.get(f"/jobs/{response.get_json()['job_id']}", headers=bearer(JOBS_ONLY)).status_code == 200

    problem_of(client.post("/predict", json={"instances": [ROW]}, headers=bearer(JOBS_ONLY)), 403)


def test_client_tokens_cannot_administer(client: FlaskClient, problem_of) -> None:
    """No client token retrains or activates: those stay the admin token's alone."""
    for token in (PREDICT_ONLY, JOBS_ONLY, *OLD_AND_NEW):
        problem_of(client.post("/retrain", headers=bearer(token)), 401)
        problem_of(client.post("/models/20990101T000000000000Z-abcdef/activate", headers=bearer(token)), 401)


def test_admin_token_does_everything(client: FlaskClient) -> None:
    admin = bearer(ADMIN_TOKEN)
    assert client.post("/predict", json={"instances": [ROW]}, headers=admin).status_code == 200
    assert client.post("/jobs", json={"instances": [ROW]}, headers=admin).status_code == 202
    for path in ("/models", "/metrics", "/openapi.json"):
        assert client.get(path, headers=admin).status_code == 200, path
    assert client.post("/retrain", headers=admin).status_code == 202


def test_both_tokens_of_a_rotation_work(client: FlaskClient) -> None:
    """Several tokens are valid at once, so a client moves to a new one before the old is removed."""
    for token in OLD_AND_NEW:
        assert client.post("/predict", json={"instances": [ROW]}, headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("headers", [{}, bearer("wrong-token-0123456789"), {"Authorization": "Basic abc"}])
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/predict"), ("post", "/jobs"), ("get", "/models"), ("get", "/metrics"), ("get", "/openapi.json")],
)
def test_missing_or_wrong_token_is_401(client: FlaskClient, problem_of, method: str, path: str, headers: dict) -> None:
    """Client endpoints and the read endpoints follow the client setting."""
    response = getattr(client, method)(path, json={"instances": [ROW]} if method == "post" else None, headers=headers)

    problem = problem_of(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in problem["detail"]


@pytest.mark.parametrize("path", ["/models", "/metrics", "/openapi.json"])
def test_any_client_token_reads(client: FlaskClient, path: str) -> None:
    assert client.get(path, headers=bearer(PREDICT_ONLY)).status_code == 200


def test_probes_need_no_token(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_everything_is_open_without_client_tokens(make: Callable[..., FlaskClient]) -> None:
    """The local default: no client token configured, nothing asked for (admin routes aside)."""
    client = make(admin_token=ADMIN_TOKEN)
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
    assert client.get("/models").status_code == 200


def test_require_token_for_predict_alone_asks_for_the_admin_token(make: Callable[..., FlaskClient], problem_of) -> None:
    """PREDICTQ_REQUIRE_TOKEN_FOR_PREDICT without client tokens works as before: the admin token."""
    client = make(admin_token=ADMIN_TOKEN, require_token_for_predict="true")
    problem_of(client.post("/predict", json={"instances": [ROW]}), 401)
    assert client.post("/predict", json={"instances": [ROW]}, headers=bearer(ADMIN_TOKEN)).status_code == 200


def test_client_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain form and the JSON form parse alike; no scopes means both."""
    monkeypatch.setenv("PREDICTQ_CLIENT_TOKENS", f"{PREDICT_ONLY}:predict {JOBS_ONLY}")
    plain = Settings().client_tokens
    monkeypatch.setenv(
        "PREDICTQ_CLIENT_TOKENS",
        f'[{{"token": "{PREDICT_ONLY}", "scopes": ["predict"]}}, {{"token": "{JOBS_ONLY}"}}]',
    )

    assert Settings().client_tokens == plain
    assert [sorted(entry.scopes) for entry in plain] == [["predict"], ["jobs", "predict"]]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("short:predict", "at least 16"),
        (f"{PREDICT_ONLY}:retrain", "predict"),
        (f"{PREDICT_ONLY}:predict {PREDICT_ONLY}:jobs", "twice"),
        (f"{ADMIN_TOKEN}:predict", "admin token"),
    ],
)
def test_bad_client_tokens_are_refused_at_start(tokens: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(admin_token=ADMIN_TOKEN, client_tokens=tokens)

"""Every error the API answers: its status and its problem-details body."""

from __future__ import annotations

import io
import json

import pytest
from flask.testing import FlaskClient

from shared.store import MODEL_FILE, ModelStore
from shared.training import TrainedModel

VALID_ROW = {
    "island": "Dream",
    "bill_length_mm": 49.0,
    "bill_depth_mm": 18.5,
    "flipper_length_mm": 196,
    "body_mass_g": 3700,
    "sex": "female",
    "year": 2009,
}


@pytest.fixture
def served(species_model: TrainedModel, save_model) -> str:
    """The species model, active."""
    return save_model(species_model)


def post_raw(client: FlaskClient, data: str | bytes):
    return client.post("/predict", data=data, content_type="application/json")


# 400: the body is not of the expected shape


@pytest.mark.parametrize("data", ["{not json", "", b"\xff\xfe{}", "null"], ids=["broken", "empty", "not-utf8", "null"])
def test_body_that_is_not_json_is_400(client: FlaskClient, served: str, problem_of, data: str | bytes) -> None:
    """A body that does not parse as JSON (or is JSON null) is a 400 saying so."""
    body = problem_of(post_raw(client, data), 400)

    assert body["type"] == "urn:predictq:problem:bad-request"
    assert body["title"] == "Bad request"
    assert body["detail"] == "The request body is not valid JSON"
    assert "errors" not in body


@pytest.mark.parametrize(("data", "kind"), [("[]", "list"), ('"rows"', "str"), ("3", "int")])
def test_body_that_is_not_an_object_is_400(client: FlaskClient, served: str, problem_of, data: str, kind: str) -> None:
    """JSON that is not an object is a 400 naming what was sent."""
    body = problem_of(post_raw(client, data), 400)

    assert body["detail"] == f"Expected a JSON object, got {kind}"


def test_body_without_instances_is_400(client: FlaskClient, served: str, problem_of) -> None:
    """An object without 'instances' is a 400 showing the expected shape."""
    body = problem_of(client.post("/predict", json={"rows": [VALID_ROW]}), 400)

    assert "'instances'" in body["detail"]


@pytest.mark.parametrize("instances", [[], {}, VALID_ROW, "rows", None, 3], ids=str)
def test_instances_empty_or_not_a_list_is_400(client: FlaskClient, served: str, problem_of, instances) -> None:
    """'instances' must be a non-empty list."""
    body = problem_of(client.post("/predict", json={"instances": instances}), 400)

    assert body["detail"] == "'instances' must be a non-empty list of objects, one per row"


def test_json_sent_as_text_plain_is_415(client: FlaskClient, served: str, problem_of) -> None:
    """A JSON body sent as text/plain (curl's default -d, and what any web page may post) is refused."""
    response = client.post("/predict", data=json.dumps({"instances": [VALID_ROW]}), content_type="text/plain")

    body = problem_of(response, 415)
    assert body["type"] == "urn:predictq:problem:unsupported-media-type"
    assert "application/json" in body["detail"]


# 422: rows that do not fit the schema


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"wingspan_mm": 900}, "wingspan_mm", "unknown feature"),
        ({"bill_length_mm": "long"}, "bill_length_mm", "expected a number, got 'long'"),
        ({"bill_length_mm": True}, "bill_length_mm", "expected a number, got boolean True"),
        ({"year": [2009]}, "year", "expected a number, got list"),
        ({"sex": {"value": "female"}}, "sex", "expected a category (string), got dict"),
        ({"body_mass_g": 10**400}, "body_mass_g", "expected a finite number"),
    ],
    ids=["unknown-feature", "text-in-numeric", "boolean-in-numeric", "list", "object", "huge-integer"],
)
def test_value_that_does_not_fit_is_422_with_row_and_field(
    client: FlaskClient, served: str, problem_of, change: dict, field: str, message: str
) -> None:
    """Each schema fault is a 422 whose errors name the row, the field and the reason."""
    rows = [VALID_ROW, {**VALID_ROW, **change}]

    body = problem_of(client.post("/predict", json={"instances": rows}), 422)

    assert body["type"] == "urn:predictq:problem:invalid-input"
    assert body["title"] == "Invalid input"
    assert body["detail"] == "1 value(s) do not fit the model's schema"
    (error,) = body["errors"]
    assert (error["row"], error["field"]) == (1, field)
    assert message in error["message"]


def test_missing_feature_is_422(client: FlaskClient, served: str, problem_of) -> None:
    """A row without a feature is a 422 naming it and suggesting null."""
    row = {k: v for k, v in VALID_ROW.items() if k != "flipper_length_mm"}

    body = problem_of(client.post("/predict", json={"instances": [row]}), 422)

    assert body["errors"] == [
        {"message": "missing required feature (send null for a missing value)", "row": 0, "field": "flipper_length_mm"}
    ]


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_number_is_422(client: FlaskClient, served: str, problem_of, literal: str) -> None:
    """Infinity/NaN literals (accepted by Python's JSON parser) are refused, not imputed."""
    text = json.dumps({"instances": [VALID_ROW]}).replace("3700", literal)

    body = problem_of(post_raw(client, text), 422)

    (error,) = body["errors"]
    assert (error["row"], error["field"]) == (0, "body_mass_g")
    assert "finite" in error["message"]


def test_row_that_is_not_an_object_is_422(client: FlaskClient, served: str, problem_of) -> None:
    """A row that is not an object is reported by row, without a field."""
    body = problem_of(client.post("/predict", json={"instances": [VALID_ROW, "Dream"]}), 422)

    assert body["errors"] == [{"message": "row must be an object, got str", "row": 1, "field": None}]


def test_every_faulty_row_is_listed(client: FlaskClient, served: str, problem_of) -> None:
    """Faults across rows are all reported in one answer, in row order."""
    rows = [{**VALID_ROW, "year": "soon"}, VALID_ROW, {**VALID_ROW, "bill_depth_mm": "x"}]

    body = problem_of(client.post("/predict", json={"instances": rows}), 422)

    assert [(e["row"], e["field"]) for e in body["errors"]] == [(0, "year"), (2, "bill_depth_mm")]


# 413: too large


def test_body_over_max_request_bytes_is_413(make_client, served: str, problem_of) -> None:
    """A JSON job body longer than max_request_bytes is refused before it is parsed."""
    client = make_client(max_request_bytes=1024)
    rows = [VALID_ROW] * 20
    assert len(json.dumps({"instances": rows})) > 1024

    body = problem_of(client.post("/jobs", json={"instances": rows}), 413)

    assert body["title"] == "Request Entity Too Large"
    assert body["detail"] == "The request body is larger than the 1024 bytes accepted here"
    # A smaller body is read (and refused only because no queue is configured here).
    assert client.post("/jobs", json={"instances": rows[:2]}).status_code == 503


def test_predict_body_over_predict_max_bytes_is_413_pointing_to_jobs(make_client, served: str, problem_of) -> None:
    """/predict has its own, smaller limit; the problem says where a large batch goes instead."""
    client = make_client(predict_max_bytes=1024)
    rows = [VALID_ROW] * 20
    assert len(json.dumps({"instances": rows})) > 1024

    body = problem_of(client.post("/predict", json={"instances": rows}), 413)

    assert body["title"] == "Payload too large"
    assert body["type"] == "urn:predictq:problem:payload-too-large"
    assert "1024 bytes" in body["detail"]
    assert "PREDICTQ_PREDICT_MAX_BYTES" in body["detail"]
    assert "POST /jobs" in body["detail"]
    assert client.post("/predict", json={"instances": rows[:2]}).status_code == 200


def test_predict_limit_is_two_mib_by_default(client: FlaskClient, served: str, problem_of) -> None:
    """The default /predict limit refuses a body over 2 MiB that the general 16 MiB limit would read."""
    padding = "x" * (2 * 1024 * 1024)
    response = client.post("/predict", json={"instances": [VALID_ROW], "padding": padding})

    assert "POST /jobs" in problem_of(response, 413)["detail"]


def test_predict_chunked_body_over_the_limit_is_413(make_client, served: str, problem_of) -> None:
    """A body without Content-Length is cut off at the limit as it is read, not read whole."""
    client = make_client(predict_max_bytes=1024)
    body = json.dumps({"instances": [VALID_ROW] * 20}).encode()

    response = client.post(
        "/predict",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn marks a chunked body
    )

    assert "POST /jobs" in problem_of(response, 413)["detail"]


# 503: nothing to serve


def test_predict_without_a_trained_model_is_503(client: FlaskClient, problem_of) -> None:
    """Before any model is trained, /predict is a 503 telling how to train one."""
    body = problem_of(client.post("/predict", json={"instances": [VALID_ROW]}), 503)

    assert body["type"] == "urn:predictq:problem:no-active-model"
    assert "predictq train" in body["detail"]


def test_readyz_without_a_trained_model_is_503_with_the_reason(client: FlaskClient, problem_of) -> None:
    """/readyz fails while no model is available, saying why."""
    body = problem_of(client.get("/readyz"), 503)

    assert "No model has been trained" in body["detail"]


def test_damaged_active_model_is_503_with_the_reason(
    client: FlaskClient, store: ModelStore, served: str, problem_of
) -> None:
    """An active model failing its checksum is not served; /readyz and /predict say why."""
    (store.storage.root / "models" / served / MODEL_FILE).write_bytes(b"damaged")

    ready = problem_of(client.get("/readyz"), 503)
    predict = problem_of(client.post("/predict", json={"instances": [VALID_ROW]}), 503)

    assert served in ready["detail"]
    assert "checksum" in ready["detail"]
    assert predict["detail"] == ready["detail"]


# 404 and 405: routing


def test_unknown_model_version_is_404(client: FlaskClient, served: str, problem_of) -> None:
    """GET /models/<unknown> is a 404 problem naming the version."""
    body = problem_of(client.get("/models/20990101T000000Z-abcdef"), 404)

    assert body["type"] == "urn:predictq:problem:model-not-found"
    assert "20990101T000000Z-abcdef" in body["detail"]


def test_unknown_route_is_404_json(client: FlaskClient, problem_of) -> None:
    """An unknown URL answers with a JSON problem, not Flask's HTML page."""
    body = problem_of(client.get("/nothing/here"), 404)

    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/predict", "POST"),
        ("put", "/predict", "POST"),
        ("post", "/healthz", "GET"),
        ("delete", "/models", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow_header(
    client: FlaskClient, problem_of, method: str, path: str, allowed: str
) -> None:
    """A wrong method stays a 405, keeps werkzeug's Allow header, and has a JSON body."""
    response = getattr(client, method)(path)

    body = problem_of(response, 405)
    assert body["title"] == "Method Not Allowed"
    assert allowed in {m.strip() for m in response.headers["Allow"].split(",")}

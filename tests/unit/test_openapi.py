"""GET /openapi.json and GET /docs: a valid document that follows the active model, and an offline Swagger UI."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import fakeredis
import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from api import create_app
from api.openapi import PROBLEM_JSON, build_openapi
from shared.settings import Settings
from shared.store import ModelStore
from shared.training import TrainedModel
from worker.celery_app import BATCH_QUEUE

ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
PENGUIN = {
    "island": "Biscoe",
    "bill_length_mm": 45.1,
    "bill_depth_mm": 14.5,
    "flipper_length_mm": 210,
    "body_mass_g": 4500,
    "sex": "male",
    "year": 2008,
}


def resolved(doc: dict, schema: object) -> object:
    """``schema`` with every local ``$ref`` replaced by its target, so jsonschema needs no registry."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            target: object = doc
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolved(doc, target)
        return {key: resolved(doc, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [resolved(doc, item) for item in schema]
    return schema


def component(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(resolved(doc, doc["components"]["schemas"][name]))


def openapi_path(rule: str) -> str:
    """A Flask rule (``/jobs/<job_id>``, ``/x/<path:name>``) as an OpenAPI path (``/jobs/{job_id}``)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.fixture
def species_version(species_model: TrainedModel, save_model) -> str:
    return save_model(species_model)


def test_document_without_a_model_is_valid_openapi(client: FlaskClient) -> None:
    """With no model trained, /openapi.json is still a valid OpenAPI 3.1 document with generic rows."""
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = response.get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    instance = doc["components"]["schemas"]["Instance"]
    assert "required" not in instance
    assert "x-model-version" not in doc["info"]


def test_document_with_an_active_model_is_valid_openapi(client: FlaskClient, species_version: str) -> None:
    """With a model active, /openapi.json validates and names the version it describes."""
    doc = client.get("/openapi.json").get_json()

    validate(doc)
    assert doc["info"]["x-model-version"] == species_version


def test_instance_schema_lists_the_models_features_with_training_ranges(
    settings: Settings, store: ModelStore, species_version: str
) -> None:
    """Each feature is a required property typed by kind, with its training range or levels as documentation."""
    model = store.load(species_version)

    instance = build_openapi(model, settings)["components"]["schemas"]["Instance"]

    assert instance["required"] == model.schema.names
    assert instance["additionalProperties"] is False
    for feature in model.schema.features:
        prop = instance["properties"][feature.name]
        assert "null" in prop["type"]
        if feature.kind == "numeric":
            assert prop["type"] == ["number", "null"]
            assert prop["x-training-min"] == feature.training_min
            assert prop["x-training-max"] == feature.training_max
            assert "minimum" not in prop and "maximum" not in prop  # warn policy: a range, not a limit
        else:
            assert "enum" not in prop  # unseen categories are accepted
            assert set(prop["x-training-levels"]) == feature.levels
            assert all(level in prop["description"] for level in feature.levels)
    flipper = instance["properties"]["flipper_length_mm"]
    assert str(flipper["x-training-max"]) in flipper["description"]
    assert instance["properties"]["island"]["type"] == ["string", "number", "boolean", "null"]  # read as text


def test_reject_policy_makes_the_training_range_a_constraint(
    settings: Settings, store: ModelStore, species_model: TrainedModel, save_model
) -> None:
    """Under the reject policy the training range is what the service enforces, so it is minimum/maximum."""
    model = store.load(save_model(species_model, policy="reject"))

    prop = build_openapi(model, settings)["components"]["schemas"]["Instance"]["properties"]["flipper_length_mm"]

    assert (prop["minimum"], prop["maximum"]) == (prop["x-training-min"], prop["x-training-max"])


def test_instance_schema_accepts_what_predict_accepts(client: FlaskClient, species_version: str) -> None:
    """Rows the service scores (out of range, unseen category, null) fit the schema; rows it refuses do not."""
    doc = client.get("/openapi.json").get_json()
    instance = component(doc, "Instance")
    unusual = {**PENGUIN, "flipper_length_mm": 462, "sex": "unknown", "body_mass_g": None}
    missing = {k: v for k, v in PENGUIN.items() if k != "year"}
    extra = {**PENGUIN, "colour": "black"}

    assert client.post("/predict", json={"instances": [unusual]}).status_code == 200
    instance.validate(unusual)
    for refused in (missing, extra):
        assert client.post("/predict", json={"instances": [refused]}).status_code == 422
        assert not instance.is_valid(refused)


def test_responses_match_their_schemas(client: FlaskClient, species_version: str) -> None:
    """Real bodies of /predict (200 and 422), /models, /models/{version} and /readyz fit the documented schemas."""
    doc = client.get("/openapi.json").get_json()

    answer = client.post("/predict", json={"instances": [{**PENGUIN, "flipper_length_mm": 462}]})
    component(doc, "PredictionResult").validate(answer.get_json())
    refused = client.post("/predict", json={"instances": [{**PENGUIN, "bill_length_mm": "long"}]})
    assert refused.mimetype == PROBLEM_JSON
    component(doc, "Problem").validate(refused.get_json())
    component(doc, "ModelList").validate(client.get("/models").get_json())
    component(doc, "ModelManifest").validate(client.get(f"/models/{species_version}").get_json())
    component(doc, "Readiness").validate(client.get("/readyz").get_json())


def test_prediction_schema_follows_the_models_task(
    settings: Settings, store: ModelStore, species_model: TrainedModel, mass_model: TrainedModel, save_model
) -> None:
    """A classifier's predictions are its classes with per-class probabilities; a regressor's are numbers."""
    classifier = build_openapi(store.load(save_model(species_model)), settings)["components"]["schemas"]
    regressor = build_openapi(store.load(save_model(mass_model)), settings)["components"]["schemas"]

    assert classifier["Prediction"]["enum"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert classifier["ClassProbabilities"]["required"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert regressor["Prediction"]["type"] == "number"
    assert "probabilities" not in regressor["PredictionResult"]["properties"]


def test_job_view_matches_its_schema(settings: Settings, species_version: str) -> None:
    """The 202 body of POST /jobs fits the Job schema and its Location header is documented."""
    app = create_app(
        settings.model_copy(update={"broker_url": "memory://", "redis_url": "redis://unused"}),
        redis_client=fakeredis.FakeRedis(),
    )
    client = app.test_client()
    doc = client.get("/openapi.json").get_json()

    response = client.post("/jobs", json={"instances": [PENGUIN]})

    celery = app.extensions["predictq"].celery
    with celery.connection_for_read() as connection:  # the memory broker is process-global: leave it empty
        while connection.default_channel.basic_get(BATCH_QUEUE, no_ack=True) is not None:
            pass
    assert response.status_code == 202
    component(doc, "Job").validate(response.get_json())
    assert "Location" in doc["paths"]["/jobs"]["post"]["responses"]["202"]["headers"]


def test_every_route_is_documented(app: Flask) -> None:
    """Each rule of the app, with each of its methods, is a path operation (a new route needs its docs)."""
    paths = build_openapi(None, app.extensions["predictq"].settings)["paths"]

    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = openapi_path(rule.rule)
        assert path in paths, f"{rule.rule} is not in the OpenAPI document"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {rule.rule} is not in the OpenAPI document"


def test_error_responses_are_problem_details(client: FlaskClient) -> None:
    """Every 4xx/5xx response of every operation is application/problem+json with the Problem schema."""
    doc = client.get("/openapi.json").get_json()

    statuses = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            codes = [code for code in operation["responses"] if code[0] in "45"]
            statuses[f"{method.upper()} {path}"] = set(codes)
            for code in codes:
                response = resolved(doc, operation["responses"][code])
                assert response["content"][PROBLEM_JSON]["schema"] == resolved(
                    doc, {"$ref": "#/components/schemas/Problem"}
                )

    assert statuses["POST /predict"] == {"400", "404", "409", "413", "415", "422", "503"}
    assert "415" in statuses["POST /jobs"]
    assert "415" in statuses["POST /retrain"]
    assert statuses["GET /jobs/{job_id}/result"] >= {"404", "409"}
    assert statuses["POST /retrain"] >= {"400", "401", "413", "422"}
    assert statuses["POST /models/{version}/activate"] >= {"401", "404", "409"}
    assert statuses["GET /readyz"] == {"503"}


def test_admin_routes_need_the_bearer_token(client: FlaskClient, make_client) -> None:
    """Retrain and activate carry the bearer scheme; /predict and /jobs only when the settings ask for it."""
    doc = client.get("/openapi.json").get_json()
    locked = make_client(require_token_for_predict=True)
    assert locked.get("/openapi.json").status_code == 401  # the document follows the client setting
    strict = build_openapi(None, locked.application.extensions["predictq"].settings)

    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, method in (("/retrain", "post"), ("/models/{version}/activate", "post")):
        assert doc["paths"][path][method]["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/predict"]["post"]
    assert strict["paths"]["/predict"]["post"]["security"] == [{"clientToken": ["predict"]}, {"bearerAuth": []}]
    assert strict["paths"]["/jobs/{job_id}"]["get"]["security"] == [{"clientToken": ["jobs"]}, {"bearerAuth": []}]
    assert strict["paths"]["/models"]["get"]["security"] == [{"clientToken": []}, {"bearerAuth": []}]
    assert {"401", "403"} <= set(strict["paths"]["/jobs/{job_id}"]["get"]["responses"])
    assert "403" not in strict["paths"]["/models"]["get"]["responses"]


def test_document_is_cached_per_model_version(
    client: FlaskClient, species_model: TrainedModel, mass_model: TrainedModel, save_model
) -> None:
    """The document is served from cache with an ETag, and rebuilt when another version becomes active."""
    first_version = save_model(species_model)
    first = client.get("/openapi.json")
    again = client.get("/openapi.json", headers={"If-None-Match": first.headers["ETag"]})
    second_version = save_model(mass_model)
    second = client.get("/openapi.json")

    assert again.status_code == 304
    assert first.get_json()["info"]["x-model-version"] == first_version
    assert second.get_json()["info"]["x-model-version"] == second_version
    assert "body_mass_g" not in second.get_json()["components"]["schemas"]["Instance"]["required"]


def test_docs_page_loads_only_local_assets(client: FlaskClient) -> None:
    """/docs is HTML that loads /openapi.json and assets from this server only, each served with its type."""
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '"/openapi.json"' in page
    assert "validatorUrl: null" in page  # else Swagger UI posts the document to validator.swagger.io
    assert not re.search(r"(https?:)?//[a-z0-9]", page, re.I), "the page must not load anything from another host"
    links = Links()
    links.feed(page)
    assert any(url.split("?")[0].endswith("swagger-ui-bundle.js") for url in links.urls)
    for url in links.urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype == ASSET_TYPES[Path(url.split("?")[0]).suffix], url
        assert asset.content_length and asset.content_length > 0
        asset.close()


def test_unknown_docs_asset_is_a_problem(client: FlaskClient, problem_of) -> None:
    """Only the listed Swagger UI files are served; any other name is a 404 problem, paths included."""
    problem_of(client.get("/docs/assets/index.html"), 404)
    problem_of(client.get("/docs/assets/..%2Fflask_swagger_ui.py"), 404)

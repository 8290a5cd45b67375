"""The OpenAPI 3.1 description of the HTTP API, with the active model's features in it.

``build_openapi`` is a pure function of the model and the settings, so the document can be
checked without HTTP. The paths are written out here, next to nothing else: a route added
without a line here fails ``tests/unit/test_openapi.py``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, get_args

from api.submission import ACTIVATION_RULES, OUT_OF_RANGE_POLICIES
from shared.estimators import ALIASES, REGISTRY
from shared.inputs import WARNING_KINDS
from shared.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobKind
from shared.schema import Feature
from shared.settings import JOBS_SCOPE, PREDICT_SCOPE, Settings
from shared.store import LoadedModel

OPENAPI_VERSION = "3.1.0"
PROBLEM_JSON = "application/problem+json"
BEARER = "bearerAuth"
CLIENT_BEARER = "clientToken"
# A description lists this many training levels; the full list is in x-training-levels.
LEVELS_IN_DESCRIPTION = 20

# Each error status a route can answer: the name of its reusable response, and when it happens.
PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body is not JSON, or not of the expected shape."),
    401: ("Unauthorized", "The bearer token is missing or wrong (or no token is configured)."),
    403: ("Forbidden", "A valid client token without the scope this operation needs (predict or jobs)."),
    404: ("NotFound", "No such model version or job."),
    409: (
        "Conflict",
        "The job is not in a state that allows this (result before success, cancel after finish), or the "
        "model version asked for fails its integrity check (its files changed since training, or, with a "
        "signing key configured, its manifest is unsigned or mis-signed).",
    ),
    413: (
        "PayloadTooLarge",
        "The body is over PREDICTQ_MAX_REQUEST_BYTES (POST /predict: PREDICTQ_PREDICT_MAX_BYTES, the detail "
        "pointing to POST /jobs), or the upload over PREDICTQ_MAX_UPLOAD_BYTES.",
    ),
    415: (
        "UnsupportedMediaType",
        "A JSON body sent without `Content-Type: application/json` (or another `application/*+json` type).",
    ),
    422: ("UnprocessableEntity", "Rows or options fail the model's schema; `errors` names each row and field."),
    429: (
        "TooManyRequests",
        "This client is over PREDICTQ_PREDICT_RATE_LIMIT or PREDICTQ_JOBS_RATE_LIMIT; see Retry-After.",
    ),
    503: ("ServiceUnavailable", "No model is active or it cannot be loaded, or the job queue cannot be reached."),
}

_CATEGORY_TYPES = {"string": "string", "boolean": "boolean", "integer": "integer", "float": "number"}
_OUT_OF_RANGE = {
    "warn": "values outside it are predicted as sent and reported as `above_training_max` / "
    "`below_training_min` warnings",
    "clip": "values outside it are clipped into it and reported as `above_training_max` / "
    "`below_training_min` warnings",
    "reject": "values outside it are refused with 422",
}


def build_openapi(model: LoadedModel | None, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document for ``model`` (the active one, or None when none is) and ``settings``.

    Parameters
    ----------
    model : LoadedModel or None
        Its features become the ``Instance`` schema; None gives a generic one.
    settings : Settings
        Limits quoted in descriptions, and whether prediction needs the token.

    Returns
    -------
    dict
        A JSON-ready OpenAPI 3.1 document.
    """
    return {
        "openapi": OPENAPI_VERSION,
        "info": _info(model),
        "tags": [
            {"name": "predictions", "description": "Score rows at once."},
            {"name": "jobs", "description": "Batches scored by the workers: submit, poll, fetch, cancel."},
            {"name": "models", "description": "Model versions and which one is active."},
            {"name": "retraining", "description": "Train a new version on the workers (admin token)."},
            {"name": "health", "description": "Liveness, readiness and metrics."},
            {"name": "documentation", "description": "This document and its viewer."},
        ],
        "paths": _paths(model, settings),
        "components": {
            "schemas": _schemas(model),
            "responses": _problem_responses(),
            "parameters": _parameters(),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token: PREDICTQ_ADMIN_TOKEN, else the one in <data dir>/admin_token. "
                    "It is accepted by every operation.",
                },
                CLIENT_BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A client token from PREDICTQ_CLIENT_TOKENS; the roles listed on an operation "
                    "are the scopes it needs (none: any client token).",
                },
            },
        },
    }


def _info(model: LoadedModel | None) -> dict:
    if model is None:
        about = "No model is active yet, so rows are described generically; train one with `predictq train`."
    else:
        about = (
            f"Rows are described by the active model, version `{model.version}`: it predicts "
            f"`{model.manifest['target']}` ({model.task}) and treats numbers outside its training range "
            f"by the policy `{model.policy}`. A request that pins another `model_version` takes that "
            "version's features (GET /models/{version})."
        )
    info = {
        "title": "predictq",
        "version": _package_version(),
        "description": "Predictions from versioned scikit-learn models, answered at once or queued as batch jobs. "
        "Every error is `application/problem+json` (RFC 9457).\n\n" + about,
        "license": {"name": "MIT", "identifier": "MIT"},
    }
    if model is not None:
        info["x-model-version"] = model.version
    return info


def _package_version() -> str:
    try:
        return version("predictq")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


# --- request rows -------------------------------------------------------------------------


def instance_schema(model: LoadedModel | None) -> dict:
    """The JSON schema of one row: the model's features, each with what training saw of it."""
    if model is None:
        return {
            "type": "object",
            "description": "One row, feature name to value. No model is active, so its features are not known "
            "here yet; GET /models/{version} lists a version's features.",
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
        }
    schema = model.schema
    properties = {f.name: feature_schema(f, model.policy) for f in schema.features}
    # Not features, but accepted so that rows of the training table can be sent unchanged.
    for name in [model.manifest["target"], *schema.ignored]:
        properties.setdefault(name, {"description": "Not a feature of this model: accepted and ignored."})
    return {
        "type": "object",
        "description": f"One row for model `{model.version}`. Every feature must be present; send null for a "
        "missing value. Other keys are refused with 422.",
        "properties": properties,
        "required": schema.names,
        "additionalProperties": False,
    }


def feature_schema(feature: Feature, policy: str) -> dict:
    """One feature's schema. Training ranges and levels are documented, not enforced:
    the service accepts values outside them and reports them as warnings."""
    if feature.kind == "numeric":
        return _numeric_schema(feature, policy)
    levels = list(feature.stats.get("levels", {}))  # most frequent first
    json_type = _CATEGORY_TYPES[feature.value_type]
    shown = ", ".join(levels[:LEVELS_IN_DESCRIPTION])
    if len(levels) > LEVELS_IN_DESCRIPTION:
        shown += f" and {len(levels) - LEVELS_IN_DESCRIPTION} more"
    words = " (or the words true/false, yes/no, t/f, 1/0)" if json_type == "boolean" else ""
    # A level may be sent as a number or a boolean too: it is read as its text (3 and 3.0 as "3").
    accepted = [json_type, "null"] if json_type == "boolean" else ["string", "number", "boolean", "null"]
    schema: dict[str, Any] = {
        "type": list(dict.fromkeys(accepted)),
        "description": f"Category{words}. Levels seen in training: {shown or 'none'}. Any other value is accepted, "
        "encoded as unknown (all levels off) and reported as an `unknown_category` warning; null is imputed "
        "with the most frequent level and reported as `missing`.",
        "x-training-levels": levels,
        "x-training-missing-rate": feature.stats.get("missing_rate"),
    }
    if levels:
        schema["examples"] = [_level_value(levels[0], json_type)]
    return schema


def _numeric_schema(feature: Feature, policy: str) -> dict:
    low, high = feature.training_min, feature.training_max
    median = feature.stats.get("quantiles", {}).get("p50")
    schema: dict[str, Any] = {
        "type": ["number", "null"],
        "description": f"Number ({feature.value_type} in training). Training range [{low}, {high}]; "
        f"{_OUT_OF_RANGE.get(policy, 'see the model manifest')}. null is imputed with the training median "
        f'{median} and reported as `missing`. A number sent as text ("14.5") is read as that number.',
        "x-training-min": low,
        "x-training-max": high,
        "x-training-missing-rate": feature.stats.get("missing_rate"),
    }
    if policy == "reject" and low is not None and high is not None:
        # Only under this policy is the range a real constraint.
        schema["minimum"], schema["maximum"] = low, high
    if median is not None:
        schema["examples"] = [round(median) if feature.value_type == "integer" else median]
    return schema


def _level_value(level: str, json_type: str) -> Any:
    """A training level (stored as text) as the JSON value a client would send."""
    try:
        if json_type == "boolean":
            return level == "True"
        if json_type == "integer":
            return int(level)
        if json_type == "number":
            return float(level)
    except ValueError:
        pass
    return level


def example_instance(model: LoadedModel | None) -> dict | None:
    """A row built from each feature's typical training value, for the request examples."""
    if model is None:
        return None
    row = {}
    for feature in model.schema.features:
        examples = feature_schema(feature, model.policy).get("examples")
        row[feature.name] = examples[0] if examples else None
    return row


# --- components ---------------------------------------------------------------------------


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(json_type: str, **more: Any) -> dict:
    return {"type": [json_type, "null"], **more}


def _schemas(model: LoadedModel | None) -> dict:
    classification = model is None or model.task == "classification"
    if model is None:
        prediction = {"type": ["string", "number", "integer", "boolean"], "description": "A label or a number."}
        probabilities = {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}}
        feature_name = {"type": "string"}
    else:
        classes = model.classes or []
        if classification and classes:
            prediction = {"enum": classes, "description": f"One of the classes of `{model.manifest['target']}`."}
        else:
            prediction = {"type": "number", "description": f"The predicted `{model.manifest['target']}`."}
        names = [str(c) for c in classes]
        probabilities = {
            "type": "object",
            "properties": {name: {"type": "number", "minimum": 0, "maximum": 1} for name in names},
            "required": names,
            "additionalProperties": False,
        }
        feature_name = {"enum": model.schema.names}
    result_properties: dict[str, Any] = {
        "model_version": {"type": "string"},
        "predictions": {"type": "array", "items": _ref("Prediction"), "description": "One per row, in order."},
    }
    if classification:
        result_properties["probabilities"] = {
            "type": "array",
            "items": _ref("ClassProbabilities"),
            "description": "Classifiers only: one object per row, class name to probability.",
        }
    result_properties["warnings"] = {"type": "array", "items": _ref("InputWarning")}
    row_request = {
        "model_version": {"type": "string", "description": "Score with this version instead of the active one."},
        "id_column": {"type": "string", "description": "A key of each row to carry through to a job's result."},
    }
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "properties": {
                "type": {"type": "string", "examples": ["urn:predictq:problem:invalid-input"]},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": _ref("FieldError")},
            },
            "required": ["type", "title", "status", "detail"],
        },
        "FieldError": {
            "type": "object",
            "properties": {
                "row": _nullable("integer", minimum=0, description="0-based row of the request or file."),
                "field": _nullable("string"),
                "message": {"type": "string"},
            },
            "required": ["message"],
        },
        "Instance": instance_schema(model),
        "JobInstance": {
            **instance_schema(model),
            "additionalProperties": True,
            "description": "A row as in `Instance`, plus the key named by `id_column` when one is given.",
        },
        "PredictRequest": {
            "type": "object",
            "properties": {
                "instances": {"type": "array", "items": _ref("Instance"), "minItems": 1},
                **row_request,
            },
            "required": ["instances"],
        },
        "JobRequest": {
            "type": "object",
            "properties": {
                "instances": {"type": "array", "items": _ref("JobInstance"), "minItems": 1},
                **row_request,
            },
            "required": ["instances"],
        },
        "CsvUpload": {
            "type": "object",
            "properties": {
                "file": {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": "text/csv",
                    "description": "CSV with a header row holding every feature column.",
                },
                **row_request,
            },
            "required": ["file"],
        },
        "Prediction": prediction,
        **({"ClassProbabilities": probabilities} if classification else {}),
        "InputWarning": {
            "type": "object",
            "description": "A value outside what training saw, and what was done with it.",
            "properties": {
                "row": {"type": "integer", "minimum": 0},
                "feature": feature_name,
                "kind": {"enum": list(WARNING_KINDS)},
                "value": {"description": "The value as sent (null when missing)."},
                "training_min": _nullable("number"),
                "training_max": _nullable("number"),
                "detail": {"type": "string"},
            },
            "required": ["row", "feature", "kind", "value", "training_min", "training_max", "detail"],
        },
        "PredictionResult": {
            "type": "object",
            "properties": result_properties,
            "required": ["model_version", "predictions", "warnings"],
        },
        "BatchResult": {
            "type": "object",
            "description": "A batch job's result: the shape of a prediction answer, for every row.",
            "properties": {
                "job_id": {"type": "string"},
                **result_properties,
                "ids": {"type": "array", "description": "The id_column values, when one was given."},
            },
            "required": ["job_id", "model_version", "predictions", "warnings"],
        },
        "Job": _job_schema(),
        "RetrainOutcome": {
            "type": "object",
            "description": "What a retrain job trained and whether it was promoted, and why.",
            "properties": {
                "version": {"type": "string"},
                "task": {"enum": ["classification", "regression"]},
                "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
                "metric": {"type": "string", "description": "The score both versions were compared on."},
                "candidate_score": {"type": "number"},
                "active_version": _nullable("string"),
                "active_score": {"type": "number"},
                "promoted": {"type": "boolean"},
                "reason": {"type": "string"},
            },
            "required": ["version", "task", "metrics", "metric", "promoted", "reason"],
        },
        "RetrainRequest": _retrain_schema(upload=False),
        "RetrainUpload": _retrain_schema(upload=True),
        "ModelSummary": {
            "type": "object",
            "properties": {
                "version": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "task": {"enum": ["classification", "regression"]},
                "target": {"type": "string"},
                "estimator": {"type": "string"},
                "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
                "serving_path": {
                    "enum": ["onnx", "sklearn"],
                    "description": "The engine that scores this version: onnx (compiled at training, checked "
                    "against scikit-learn on the holdout rows) or sklearn.",
                },
                "serving_reason": {"type": "string", "description": "Why that engine serves it."},
                "active": {"type": "boolean"},
            },
            "required": ["version", "created_at", "task", "target", "estimator", "metrics", "serving_path", "active"],
        },
        "ModelList": {
            "type": "object",
            "properties": {
                "active_version": _nullable("string"),
                "models": {"type": "array", "items": _ref("ModelSummary"), "description": "Newest first."},
            },
            "required": ["active_version", "models"],
        },
        "ModelManifest": {
            "type": "object",
            "description": "Everything saved with a version: its features with their training statistics, "
            "estimator, metrics, checksum, training data and library versions.",
            "properties": {
                "version": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "task": {"enum": ["classification", "regression"]},
                "target": {"type": "string"},
                "classes": {"type": ["array", "null"]},
                "feature_schema": {"type": "object"},
                "out_of_range_policy": {"enum": list(OUT_OF_RANGE_POLICIES)},
                "estimator": {"type": "object"},
                "metrics": {"type": "object"},
                "model_file": {"type": "object"},
                "serving": {
                    "type": "object",
                    "description": "How the version is served: path, reason, the parity figures against "
                    "scikit-learn on the holdout rows, the ONNX file with its sha256, and the row count up to "
                    "which onnxruntime scores (onnx_max_rows; null: every size).",
                },
                "serving_path": {
                    "enum": ["onnx", "sklearn"],
                    "description": "The engine that scores this version: onnx (compiled at training, checked "
                    "against scikit-learn on the holdout rows) or sklearn.",
                },
                "serving_reason": {"type": "string", "description": "Why that engine serves it."},
                "integrity": {
                    "enum": ["ok", "checksum mismatch", "missing file", "unsigned", "signature invalid"],
                    "description": "Whether the stored model files are the ones training wrote (sha256), and, "
                    "when PREDICTQ_SIGNING_KEY is set, whether the manifest carries a valid signature.",
                },
                "training_data": {"type": "object"},
                "library_versions": {"type": "object", "additionalProperties": {"type": "string"}},
                "active": {"type": "boolean"},
            },
            "required": [
                "version",
                "created_at",
                "task",
                "target",
                "feature_schema",
                "out_of_range_policy",
                "serving_path",
                "active",
            ],
        },
        "Activation": {
            "type": "object",
            "properties": {"active_version": {"type": "string"}},
            "required": ["active_version"],
        },
        "Health": {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]},
        "Readiness": {
            "type": "object",
            "properties": {"status": {"const": "ready"}, "model_version": {"type": "string"}},
            "required": ["status", "model_version"],
        },
    }


def _job_schema() -> dict:
    timestamp = _nullable("string", format="date-time")
    return {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "kind": {"enum": list(get_args(JobKind))},
            "status": {"enum": [QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED]},
            "progress": {
                "type": "object",
                "properties": {"done": {"type": "integer"}, "total": _nullable("integer")},
                "required": ["done", "total"],
            },
            "submitted_at": timestamp,
            "started_at": timestamp,
            "finished_at": timestamp,
            "model_version": _nullable("string", description="The version that scores (or was trained by) the job."),
            "status_url": {"type": "string", "format": "uri"},
            "result_url": {"type": "string", "format": "uri", "description": "Once the job has succeeded."},
            "id_column": {"type": "string"},
            "data_quality": {
                "type": "object",
                "description": "Per feature, how many rows drew each kind of warning.",
                "examples": [{"flipper_length_mm": {"above_training_max": 3}, "sex": {"missing": 11}}],
                "additionalProperties": {
                    "type": "object",
                    "propertyNames": {"enum": list(WARNING_KINDS)},
                    "additionalProperties": {"type": "integer"},
                },
            },
            "result": _ref("RetrainOutcome"),
            "error": {"type": "string", "description": "Why a failed job failed."},
        },
        "required": ["job_id", "kind", "status", "progress", "submitted_at", "status_url"],
    }


def _without_null(schema: dict) -> dict:
    shown = dict(schema)
    if isinstance(shown.get("type"), list):
        shown["type"] = next(t for t in shown["type"] if t != "null")
    if "enum" in shown:
        shown["enum"] = [value for value in shown["enum"] if value is not None]
    return shown


def _retrain_schema(*, upload: bool) -> dict:
    estimators = sorted({name for names in REGISTRY.values() for name in names} | set(ALIASES))
    # null for an option means its default (the client sends null for options left unset).
    properties: dict[str, Any] = {
        "target": {"type": ["string", "null"], "description": "Column to predict; default: the active model's target."},
        "task": {
            "enum": ["classification", "regression", None],
            "description": "Inferred from the target if absent.",
        },
        "estimator": {"enum": [*estimators, None]},
        "params": {"type": ["object", "null"], "description": "Estimator parameters."},
        "activate": {"enum": [*ACTIVATION_RULES, None], "default": "if_better"},
        "out_of_range_policy": {"enum": [*OUT_OF_RANGE_POLICIES, None]},
    }
    if upload:  # form fields are text: no null there
        properties = {name: _without_null(schema) for name, schema in properties.items()}
        properties["params"] = {"type": "string", "description": "Estimator parameters as a JSON object."}
        return {
            "type": "object",
            "properties": {
                "file": {
                    "type": "string",
                    "format": "binary",
                    "contentMediaType": "text/csv",
                    "description": "The training table, target column included.",
                },
                **properties,
            },
            "required": ["file"],
        }
    properties["data"] = {
        "type": ["string", "null"],
        "description": "A CSV or Parquet file under the data directory; default: the configured dataset.",
    }
    return {"type": "object", "properties": properties, "examples": [{"activate": "if_better"}]}


def _problem_responses() -> dict:
    responses = {}
    for status, (name, when) in PROBLEMS.items():
        response: dict[str, Any] = {
            "description": when,
            "content": {PROBLEM_JSON: {"schema": _ref("Problem")}},
        }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}
        responses[name] = response
    responses["UnprocessableEntity"]["content"][PROBLEM_JSON]["example"] = {
        "type": "urn:predictq:problem:invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "1 value(s) do not fit the model's schema",
        "errors": [{"message": "expected a number, got 'long'", "row": 0, "field": "bill_length_mm"}],
    }
    return responses


def _parameters() -> dict:
    return {
        "JobId": {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
        "ModelVersion": {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}},
    }


# --- paths --------------------------------------------------------------------------------


def _json(schema: dict, **media: Any) -> dict:
    return {"application/json": {"schema": schema, **media}}


def _html() -> dict:
    return {"text/html": {"schema": {"type": "string"}}}


def _errors(*statuses: int) -> dict:
    return {str(s): {"$ref": f"#/components/responses/{PROBLEMS[s][0]}"} for s in statuses}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: dict,
    *,
    errors: tuple[int, ...] = (),
    secured: bool = False,
    client_scopes: list[str] | None = None,
    **more: Any,
) -> dict:
    """``secured``: the admin token only; ``client_scopes`` (a list, maybe empty): a client token
    with those scopes, or the admin token."""
    operation = {"operationId": operation_id, "tags": [tag], "summary": summary, **more}
    if secured:
        operation["security"] = [{BEARER: []}]
        errors = tuple(sorted({*errors, 401}))
    elif client_scopes is not None:
        operation["security"] = [{CLIENT_BEARER: client_scopes}, {BEARER: []}]
        errors = tuple(sorted({*errors, 401, *((403,) if client_scopes else ())}))
    operation["responses"] = {**responses, **_errors(*errors)}
    return operation


def _accepted(what: str) -> dict:
    return {
        "202": {
            "description": f"{what} queued; poll the job at `status_url` (also the Location header).",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
            "content": _json(_ref("Job")),
        }
    }


def _paths(model: LoadedModel | None, settings: Settings) -> dict:
    required = settings.client_auth_required
    predict_scope = [PREDICT_SCOPE] if required else None
    jobs_scope = [JOBS_SCOPE] if required else None
    any_client = [] if required else None
    predict_limited = (429,) if settings.predict_rate_limit else ()
    jobs_limited = (429,) if settings.jobs_rate_limit else ()
    example = example_instance(model)
    predict_media = {"example": {"instances": [example]}} if example else {}
    job = {"$ref": "#/components/parameters/JobId"}
    version = {"$ref": "#/components/parameters/ModelVersion"}
    csv_option = {
        "model_version": "Score with this version instead of the active one (text/csv bodies; JSON and "
        "multipart bodies carry it in the body).",
        "id_column": "A column to carry through to the result (text/csv bodies; JSON and multipart bodies "
        "carry it in the body).",
    }
    return {
        "/predict": {
            "post": _operation(
                "predict",
                "predictions",
                "Predict a few rows at once",
                {
                    "200": {
                        "description": "Predictions, with a warning per value outside training.",
                        "content": _json(_ref("PredictionResult")),
                    },
                    **_accepted(f"More than {settings.sync_max_rows} rows (PREDICTQ_SYNC_MAX_ROWS): a batch job"),
                },
                errors=(400, 404, 409, 413, 415, 422, 503, *predict_limited),
                client_scopes=predict_scope,
                description="Values are coerced to the types training saw; values outside what training saw "
                "are handled by the model's policy and listed in `warnings`.",
                requestBody={"required": True, "content": _json(_ref("PredictRequest"), **predict_media)},
            )
        },
        "/jobs": {
            "post": _operation(
                "submit_job",
                "jobs",
                "Queue a batch: JSON rows, a CSV body or a multipart CSV upload",
                _accepted("The batch"),
                errors=(400, 404, 409, 413, 415, 422, 503, *jobs_limited),
                client_scopes=jobs_scope,
                parameters=[
                    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
                    for name, text in csv_option.items()
                ],
                requestBody={
                    "required": True,
                    "content": {
                        **_json(_ref("JobRequest"), **predict_media),
                        "text/csv": {
                            "schema": {"type": "string", "description": "CSV with a header row holding every feature."}
                        },
                        "multipart/form-data": {
                            "schema": _ref("CsvUpload"),
                            "encoding": {"file": {"contentType": "text/csv"}},
                        },
                    },
                },
            )
        },
        "/jobs/{job_id}": {
            "parameters": [job],
            "get": _operation(
                "show_job",
                "jobs",
                "A job's status, progress and data-quality summary",
                {"200": {"description": "The job.", "content": _json(_ref("Job"))}},
                errors=(404, 503, *jobs_limited),
                client_scopes=jobs_scope,
            ),
            "delete": _operation(
                "cancel_job",
                "jobs",
                "Cancel a queued or running job",
                {"200": {"description": "The cancelled job.", "content": _json(_ref("Job"))}},
                errors=(404, 409, 503, *jobs_limited),
                client_scopes=jobs_scope,
            ),
        },
        "/jobs/{job_id}/result": {
            "parameters": [job],
            "get": _operation(
                "job_result",
                "jobs",
                "A succeeded job's result, as JSON or CSV",
                {
                    "200": {
                        "description": "A batch's predictions (JSON, or CSV: input columns plus `prediction` and "
                        "`probability_<class>`), or a retrain job's outcome.",
                        "content": {
                            **_json({"oneOf": [_ref("BatchResult"), _ref("RetrainOutcome")]}),
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    }
                },
                errors=(404, 409, 503, *jobs_limited),
                client_scopes=jobs_scope,
                parameters=[
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["json", "csv"]},
                        "description": "Overrides the Accept header.",
                    }
                ],
            ),
        },
        "/retrain": {
            "post": _operation(
                "retrain",
                "retraining",
                "Train a new version on the workers",
                _accepted("The training"),
                errors=(400, 413, 415, 422, 503),
                secured=True,
                description="With `activate: if_better` (the default) the new version is promoted only when its "
                "holdout score is at least the active model's on the same rows. The job's `result` says why.",
                requestBody={
                    "required": False,
                    "content": {
                        **_json(_ref("RetrainRequest")),
                        "multipart/form-data": {
                            "schema": _ref("RetrainUpload"),
                            "encoding": {"file": {"contentType": "text/csv"}},
                        },
                    },
                },
            )
        },
        "/models": {
            "get": _operation(
                "list_models",
                "models",
                "Every version, newest first, and which one is active",
                {"200": {"description": "The versions.", "content": _json(_ref("ModelList"))}},
                client_scopes=any_client,
            )
        },
        "/models/{version}": {
            "parameters": [version],
            "get": _operation(
                "show_model",
                "models",
                "A version's manifest: features with training statistics, metrics, provenance",
                {"200": {"description": "The manifest.", "content": _json(_ref("ModelManifest"))}},
                errors=(404,),
                client_scopes=any_client,
            ),
        },
        "/models/{version}/report": {
            "parameters": [version],
            "get": _operation(
                "model_report",
                "models",
                "A version's report: metrics, plots and the traffic it has scored, as one HTML page",
                {"200": {"description": "A self-contained HTML page.", "content": _html()}},
                errors=(404,),
                client_scopes=any_client,
            ),
        },
        "/models/{version}/activate": {
            "parameters": [version],
            "post": _operation(
                "activate",
                "models",
                "Make a version the active one (roll back or forward)",
                {"200": {"description": "The version now active.", "content": _json(_ref("Activation"))}},
                errors=(404, 409, 503),
                secured=True,
            ),
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "health",
                "Liveness",
                {"200": {"description": "The process answers.", "content": _json(_ref("Health"))}},
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "health",
                "Readiness: a model is loaded",
                {"200": {"description": "Ready, with the version served.", "content": _json(_ref("Readiness"))}},
                errors=(503,),
            )
        },
        "/metrics": {
            "get": _operation(
                "show_metrics",
                "health",
                "Prometheus metrics: requests, rows, input warnings, model version, jobs, queue depth",
                {
                    "200": {
                        "description": "Prometheus text format (OpenMetrics when the Accept header asks for it).",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                client_scopes=any_client,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi_document",
                "documentation",
                "This document",
                {
                    "200": {
                        "description": "OpenAPI 3.1, with the active model's features.",
                        "content": _json({"type": "object"}),
                    }
                },
                client_scopes=any_client,
            )
        },
        "/docs": {
            "get": _operation(
                "docs_page",
                "documentation",
                "Swagger UI for this document",
                {"200": {"description": "An HTML page.", "content": _html()}},
            )
        },
        "/docs/assets/{name}": {
            "get": _operation(
                "docs_asset",
                "documentation",
                "A Swagger UI asset (script, style sheet, icon), from the installed package",
                {"200": {"description": "The file.", "content": {"*/*": {"schema": {"type": "string"}}}}},
                errors=(404,),
                parameters=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
        },
    }

"""A small HTTP client for the predictq API, used by the ``predictq`` client commands.

Every error answer of the API is ``application/problem+json``; :class:`PredictqClient`
turns it into a :class:`ProblemError` whose text is what a person should read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 5.0
# Uploads of large files and the first request after a model swap can take a while to answer.
READ_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.5
DOWNLOAD_CHUNK_BYTES = 1 << 16

# Names in the server's answers, repeated here so the client needs no scikit-learn import;
# tests/unit/test_client.py checks they match shared/batch.py and shared/training.py.
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
KEY_METRIC = {"classification": "macro_f1", "regression": "r2"}

# Job statuses, as GET /jobs/<id> reports them.
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})


class ClientError(Exception):
    """Anything the client cannot do; ``str()`` is the message to show."""


class ProblemError(ClientError):
    """An error answer from the API (RFC 9457 problem details)."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict] | None = None, kind: str = ""):
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.kind = kind
        super().__init__(self.describe())

    @classmethod
    def from_response(cls, response: requests.Response) -> ProblemError:
        """Read a problem-details body; a body that is not one still gives status and reason."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = " ".join(response.text.split())[:200]
            return cls(response.status_code, response.reason or "Error", text or "(no details in the answer)")
        errors = body.get("errors")
        return cls(
            status=int(body.get("status") or response.status_code),
            title=str(body.get("title") or response.reason or "Error"),
            detail=str(body.get("detail") or ""),
            errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [],
            kind=str(body.get("type") or ""),
        )

    def describe(self) -> str:
        """``error 422 Invalid input: <detail>``, then one indented line per entry of ``errors``."""
        head = f"error {self.status} {self.title}" + (f": {self.detail}" if self.detail else "")
        return "\n".join([head, *(f"  {describe_field_error(e)}" for e in self.errors)])


def describe_field_error(error: dict) -> str:
    """``row 3, field age: message``; the row or field is left out when the server gave none."""
    where = []
    if error.get("row") is not None:
        where.append(f"row {error['row']}")
    if error.get("field") is not None:
        where.append(f"field {error['field']}")
    message = str(error.get("message") or "invalid")
    return f"{', '.join(where)}: {message}" if where else message


class ServiceUnreachable(ClientError):
    """No answer from the service at all: nothing listening, wrong host, or too slow."""


class JobFailed(ClientError):
    """A waited-for job ended failed or cancelled."""

    def __init__(self, record: dict):
        self.record = record
        job_id, status = record.get("job_id"), record.get("status")
        message = f"job {job_id} {status}"
        if record.get("error"):
            message += f": {record['error']}"
        super().__init__(message)


class WaitTimeout(ClientError):
    """A job was still queued or running when the caller stopped waiting."""

    def __init__(self, record: dict, timeout_s: float):
        self.record = record
        job_id = record.get("job_id")
        super().__init__(
            f"job {job_id} is still {record.get('status')} after {timeout_s:g} s; "
            f"it goes on: check it later with `predictq jobs status {job_id}`"
        )


class PredictqClient:
    """The predictq HTTP API on ``base_url``, with an optional bearer token.

    Methods return the decoded JSON answer and raise :class:`ProblemError` for an error
    answer and :class:`ServiceUnreachable` when nothing answers.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.session = session or requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PredictqClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request; raise for anything but a 2xx answer."""
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise ServiceUnreachable(
                f"cannot connect to predictq at {self.base_url} ({_reason(exc)}).\n"
                "Is the service running? Start it with `make run`, or point --url (PREDICTQ_URL) at it."
            ) from exc
        except requests.Timeout as exc:
            raise ServiceUnreachable(f"predictq at {self.base_url} did not answer {method} {path} in time") from exc
        if response.status_code >= 400:
            try:
                raise ProblemError.from_response(response)
            finally:
                response.close()
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(f"{method} {path} answered {response.status_code} with a body that is not JSON") from exc

    # --- predictions and jobs ---------------------------------------------------------------

    def predict(self, instances: list[dict], model_version: str | None = None) -> dict:
        """POST /predict. Above the server's sync limit the answer is a job record (it has ``job_id``)."""
        body: dict[str, Any] = {"instances": instances}
        if model_version:
            body["model_version"] = model_version
        return self._json("POST", "/predict", json=body)

    def submit_rows(
        self, instances: list[dict], id_column: str | None = None, model_version: str | None = None
    ) -> dict:
        """POST /jobs with JSON rows."""
        body: dict[str, Any] = {"instances": instances}
        if id_column:
            body["id_column"] = id_column
        if model_version:
            body["model_version"] = model_version
        return self._json("POST", "/jobs", json=body)

    def submit_csv(self, path: Path, id_column: str | None = None, model_version: str | None = None) -> dict:
        """POST /jobs with a CSV file, streamed from disk."""
        params = {key: value for key, value in (("id_column", id_column), ("model_version", model_version)) if value}
        with open(path, "rb") as stream:
            return self._json("POST", "/jobs", params=params, data=stream, headers={"Content-Type": "text/csv"})

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        return self._json("DELETE", f"/jobs/{job_id}")

    def job_result(self, job_id: str) -> dict:
        """The JSON result: predictions (batch) or the training outcome (retrain)."""
        return self._json("GET", f"/jobs/{job_id}/result", params={"format": "json"})

    def download_result(self, job_id: str, out: IO[bytes], result_format: str = "csv") -> int:
        """Stream the result file in ``result_format`` (csv or json) into ``out``; return the bytes written."""
        written = 0
        with self.request("GET", f"/jobs/{job_id}/result", params={"format": result_format}, stream=True) as response:
            for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
        return written

    def wait_for_job(
        self,
        job_id: str,
        timeout_s: float,
        *,
        on_update: Callable[[dict], None] | None = None,
        poll_s: float = POLL_INTERVAL_S,
    ) -> dict:
        """Poll GET /jobs/<id> until the job finishes; return its record if it succeeded.

        Raises :class:`JobFailed` when it failed or was cancelled, :class:`WaitTimeout`
        when it is still going after ``timeout_s`` seconds.
        """
        record: dict = {}
        for record in self.poll_job(job_id, timeout_s, poll_s=poll_s):
            if on_update is not None:
                on_update(record)
        # poll_job stops only at a finished record (or raises WaitTimeout).
        if record["status"] != SUCCEEDED:
            raise JobFailed(record)
        return record

    def poll_job(self, job_id: str, timeout_s: float, *, poll_s: float = POLL_INTERVAL_S) -> Iterator[dict]:
        """Yield the job record every ``poll_s`` seconds until it finishes or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.job(job_id)
            yield record
            if record["status"] in FINISHED:
                return
            if time.monotonic() >= deadline:
                raise WaitTimeout(record, timeout_s)
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))

    # --- models and retraining --------------------------------------------------------------

    def models(self) -> dict:
        return self._json("GET", "/models")

    def activate(self, version: str) -> dict:
        return self._json("POST", f"/models/{version}/activate")

    def retrain(self, options: dict[str, Any], upload: Path | None = None) -> dict:
        """POST /retrain: JSON options, or a multipart upload of ``upload`` with the options as fields."""
        if upload is None:
            return self._json("POST", "/retrain", json=options)
        fields = {key: value for key, value in options.items() if key != "params" and value is not None}
        if options.get("params"):
            fields["params"] = json.dumps(options["params"])
        with open(upload, "rb") as stream:
            return self._json("POST", "/retrain", data=fields, files={"file": (upload.name, stream, "text/csv")})


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return "no connection"

"""The HTTP client and the client commands, without a server: answers are `requests.Response` objects built here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from requests.adapters import BaseAdapter

from api.errors import handle_domain_error
from predictq import client as client_module
from predictq import client_cli
from predictq.cli import main
from predictq.client import JobFailed, PredictqClient, ProblemError, ServiceUnreachable, WaitTimeout
from shared import batch, training
from shared.errors import FieldError, InvalidInput
from shared.settings import Settings

BASE_URL = "http://predictq.test"
NOT_FOUND = {
    "type": "urn:predictq:problem:job-not-found",
    "title": "Job not found",
    "status": 404,
    "detail": "No job 'nope' (unknown, or older than the retention period)",
}


def http_response(
    status: int, body: dict | str | bytes, *, content_type: str = "application/problem+json", reason: str = ""
) -> requests.Response:
    """A response as requests would hand it over, read from memory."""
    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response.headers["Content-Type"] = content_type
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response.raw = io.BytesIO(data)
    response.encoding = "utf-8"
    return response


def job_record(status: str, done: int = 0, total: int | None = 10, **extra: object) -> requests.Response:
    record = {"job_id": "j1", "kind": "batch", "status": status, "progress": {"done": done, "total": total}, **extra}
    return http_response(200, record, content_type="application/json")


class Replies(BaseAdapter):
    """A transport that answers each request with the next queued response (or raises the queued error)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[requests.Response | Exception] = []
        self.sent: list[requests.PreparedRequest] = []

    def add(self, *items: requests.Response | Exception) -> Replies:
        self.queue.extend(items)
        return self

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.sent.append(request)
        item = self.queue.pop(0)
        if isinstance(item, Exception):
            raise item
        item.request, item.url = request, request.url
        return item

    def close(self) -> None:
        pass


@pytest.fixture
def replies() -> Replies:
    return Replies()


def stub_client(replies: Replies, base_url: str = BASE_URL, token: str | None = None) -> PredictqClient:
    session = requests.Session()
    session.mount("http://", replies)
    return PredictqClient(base_url, token, session=session)


@pytest.fixture
def client(replies: Replies):
    with stub_client(replies, token="s3cret") as built:
        yield built


@pytest.fixture
def run_cli(replies: Replies, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Invoke `predictq ...` with its client answering from ``replies``."""
    monkeypatch.setattr(client_cli, "PredictqClient", lambda url, token: stub_client(replies, url, token))
    runner = CliRunner(env={"PREDICTQ_DATA_DIR": str(tmp_path)})
    return lambda *args: runner.invoke(main, list(args))


# --- problem details -----------------------------------------------------------------------


def test_problem_text_gives_status_title_detail_then_one_line_per_error() -> None:
    """`error 422 Invalid input: <detail>`, then `row 3, field age: message` lines."""
    body = {
        "type": "urn:predictq:problem:invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "2 value(s) do not fit the model's schema",
        "errors": [
            {"row": 3, "field": "age", "message": "expected a number, got 'old'"},
            {"row": 0, "field": "sex", "message": "missing required feature"},
        ],
    }
    problem = ProblemError.from_response(http_response(422, body))

    assert (problem.status, problem.title, problem.kind) == (422, "Invalid input", "urn:predictq:problem:invalid-input")
    assert str(problem) == (
        "error 422 Invalid input: 2 value(s) do not fit the model's schema\n"
        "  row 3, field age: expected a number, got 'old'\n"
        "  row 0, field sex: missing required feature"
    )


def test_problem_text_reads_what_the_api_error_handler_writes() -> None:
    """The body built by api/errors.py for a domain error reads back into the same status, title and faults."""
    served = handle_domain_error(
        InvalidInput("1 value(s) do not fit", [FieldError("expected a number, got 'long'", 0, "bill_length_mm")])
    )
    response = http_response(served.status_code, served.get_data(), content_type=served.content_type)

    assert str(ProblemError.from_response(response)) == (
        "error 422 Invalid input: 1 value(s) do not fit\n  row 0, field bill_length_mm: expected a number, got 'long'"
    )


@pytest.mark.parametrize(
    ("error", "line"),
    [
        ({"row": None, "field": "data", "message": "no such file"}, "field data: no such file"),
        ({"row": 0, "field": None, "message": "row must be an object"}, "row 0: row must be an object"),
        ({"message": "bad"}, "bad"),
    ],
    ids=["field-only", "row-only", "neither"],
)
def test_problem_lines_leave_out_what_the_server_did_not_name(error: dict, line: str) -> None:
    """An entry without a row or field says only what it has (row 0 is a row, not a missing one)."""
    body = {"title": "Invalid input", "status": 422, "detail": "d", "errors": [error]}
    assert str(ProblemError.from_response(http_response(422, body))).splitlines()[1] == f"  {line}"


def test_an_answer_that_is_not_problem_details_keeps_status_reason_and_text() -> None:
    """A proxy's HTML error page still gives a readable one-liner."""
    page = "<html>\n <body>upstream   down</body>\n</html>"
    response = http_response(502, page, content_type="text/html", reason="Bad Gateway")

    assert (
        str(ProblemError.from_response(response)) == "error 502 Bad Gateway: <html> <body>upstream down</body> </html>"
    )


# --- the client --------------------------------------------------------------------------------


def test_an_error_answer_raises_problem_error(client: PredictqClient, replies: Replies) -> None:
    """GET /jobs/<id> answered 404 raises ProblemError; the token went along as a bearer header."""
    replies.add(http_response(404, NOT_FOUND))

    with pytest.raises(ProblemError) as raised:
        client.job("nope")

    assert raised.value.status == 404
    assert str(raised.value) == f"error 404 Job not found: {NOT_FOUND['detail']}"
    assert replies.sent[0].url == f"{BASE_URL}/jobs/nope"
    assert replies.sent[0].headers["Authorization"] == "Bearer s3cret"


def test_connection_refused_names_the_url_and_how_to_start_the_service(replies: Replies) -> None:
    """No server listening: the message names the URL, says the connection was refused and suggests `make run`."""
    replies.add(requests.ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused"))

    with stub_client(replies) as client, pytest.raises(ServiceUnreachable) as raised:
        client.models()

    assert f"cannot connect to predictq at {BASE_URL} (connection refused)" in str(raised.value)
    assert "make run" in str(raised.value)


def test_wait_for_job_follows_progress_until_it_succeeds(client: PredictqClient, replies: Replies) -> None:
    """Every polled record is passed on; the finished one is returned."""
    replies.add(job_record("queued", total=None), job_record("running", 4), job_record("succeeded", 10))
    seen: list[tuple[str, int]] = []

    record = client.wait_for_job(
        "j1", timeout_s=60, poll_s=0, on_update=lambda r: seen.append((r["status"], r["progress"]["done"]))
    )

    assert record["status"] == "succeeded"
    assert seen == [("queued", 0), ("running", 4), ("succeeded", 10)]


def test_wait_for_job_raises_with_the_jobs_error_when_it_fails(client: PredictqClient, replies: Replies) -> None:
    """A failed job ends the wait with its own error message."""
    replies.add(job_record("running"), job_record("failed", error="row 7, field year: expected a number"))

    with pytest.raises(JobFailed, match=r"^job j1 failed: row 7, field year: expected a number$"):
        client.wait_for_job("j1", timeout_s=60, poll_s=0)


def test_wait_for_job_is_bounded(client: PredictqClient, replies: Replies) -> None:
    """A job still running at the deadline raises WaitTimeout saying how to look again."""
    replies.add(job_record("running", 3))

    with pytest.raises(WaitTimeout, match=r"still running after 0 s.*predictq jobs status j1"):
        client.wait_for_job("j1", timeout_s=0, poll_s=0)


def test_download_streams_the_result_in_the_format_asked(client: PredictqClient, replies: Replies) -> None:
    """GET /jobs/<id>/result?format=csv is copied byte for byte."""
    csv_text = b"penguin_id,prediction\np001,Adelie\n"
    replies.add(http_response(200, csv_text, content_type="text/csv"))
    out = io.BytesIO()

    assert client.download_result("j1", out, "csv") == len(csv_text)
    assert out.getvalue() == csv_text
    assert replies.sent[0].url == f"{BASE_URL}/jobs/j1/result?format=csv"


# --- the commands ------------------------------------------------------------------------------


def test_command_shows_the_problem_and_exits_1(run_cli, replies: Replies) -> None:
    """`predictq jobs status` of an unknown job prints the problem on stderr and exits 1."""
    replies.add(http_response(404, NOT_FOUND))

    result = run_cli("jobs", "status", "nope")

    assert result.exit_code == 1
    assert result.stderr == f"error 404 Job not found: {NOT_FOUND['detail']}\n"
    assert result.stdout == ""


def test_unauthorized_adds_a_hint_about_the_token(run_cli, replies: Replies) -> None:
    """A 401 says where the token comes from."""
    body = {"title": "Unauthorized", "status": 401, "detail": "Send the admin token as 'Authorization: Bearer <token>'"}
    replies.add(http_response(401, body))

    result = run_cli("models", "activate", "v1")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error 401 Unauthorized: Send the admin token as 'Authorization: Bearer <token>'",
        "  hint: pass --token or set PREDICTQ_TOKEN (the server's var/admin_token)",
    ]


def test_models_list_marks_the_active_version_and_its_key_metric(run_cli, replies: Replies) -> None:
    """One row per version, newest first, `*` on the active one, macro F1 or R² as the key metric."""
    models = {
        "active_version": "v1",
        "models": [
            {"version": "v2", "created_at": "2026-01-02", "task": "regression", "target": "body_mass_g",
             "estimator": "ridge", "metrics": {"r2": 0.81234, "rmse": 300.0}, "active": False},
            {"version": "v1", "created_at": "2026-01-01", "task": "classification", "target": "species",
             "estimator": "random_forest", "metrics": {"macro_f1": 0.97, "accuracy": 0.98}, "active": True},
        ],
    }  # fmt: skip
    replies.add(http_response(200, models, content_type="application/json"))

    result = run_cli("models", "list")

    assert result.exit_code == 0, result.output
    header, newer, active = result.stdout.splitlines()
    assert header.split() == ["VERSION", "CREATED", "TASK", "ESTIMATOR", "KEY", "METRIC"]
    assert newer.split() == ["v2", "2026-01-02", "regression", "ridge", "r2", "0.8123"]
    assert active.split() == ["*", "v1", "2026-01-01", "classification", "random_forest", "macro_f1", "0.9700"]


def test_retrain_outcome_says_promoted_or_not_with_reason_and_scores() -> None:
    """The retraining summary names the version, the decision, its reason and both scores."""
    reason = "macro_f1 0.9000 < active 0.9500 on the same holdout rows; kept the active model"
    kept = {
        "version": "v3", "promoted": False, "metric": "macro_f1", "candidate_score": 0.9, "active_version": "v1",
        "active_score": 0.95, "reason": reason,
    }  # fmt: skip

    assert client_cli.describe_retrain(kept) == [
        "not promoted: version v3 was saved; v1 stays active",
        f"reason: {reason}",
        "macro_f1: candidate 0.9000, active v1 0.9500",
    ]
    promoted = {**kept, "promoted": True, "candidate_score": 0.96, "reason": "r"}
    assert client_cli.describe_retrain(promoted)[0] == "promoted: version v3 is now active"


def test_prediction_csv_has_the_columns_of_a_jobs_csv_result() -> None:
    """Input columns, then `prediction`, then `probability_<class>` in the server's class order."""
    rows = pd.DataFrame({"penguin_id": ["p1", "p2"], "island": ["Dream", "Biscoe"]})
    answer = {
        "predictions": ["Adelie", "Gentoo"],
        "probabilities": [{"Adelie": 0.9, "Gentoo": 0.1}, {"Adelie": 0.2, "Gentoo": 0.8}],
    }

    table = client_cli.predictions_frame(rows, answer)

    assert list(table.columns) == ["penguin_id", "island", "prediction", "probability_Adelie", "probability_Gentoo"]
    assert table["probability_Gentoo"].tolist() == [0.1, 0.8]


def test_token_falls_back_to_settings_then_the_token_file(tmp_path: Path) -> None:
    """PREDICTQ_ADMIN_TOKEN wins; else <data dir>/admin_token; else none."""
    assert Settings(data_dir=tmp_path).resolved_admin_token() is None
    (tmp_path / "admin_token").write_text("from-file\n")
    assert Settings(data_dir=tmp_path).resolved_admin_token() == "from-file"
    assert Settings(data_dir=tmp_path, admin_token="from-env").resolved_admin_token() == "from-env"


def test_client_vocabulary_matches_the_server() -> None:
    """The column names and key metrics the client repeats (to skip importing scikit-learn) are the server's."""
    assert client_module.PREDICTION_COLUMN == batch.PREDICTION_COLUMN
    assert client_module.PROBABILITY_PREFIX == batch.PROBABILITY_PREFIX
    assert client_module.KEY_METRIC == training.COMPARISON_METRIC

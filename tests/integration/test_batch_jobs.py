"""JSON batch jobs through the real queue: POST /jobs and oversized POST /predict, scored by a worker."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pandas as pd
import pytest

from shared.compiled import PARITY_TOLERANCE

pytestmark = pytest.mark.integration

ID_COLUMN = "ref"
ROWS = 30  # with job_chunk_rows=4: eight chunks, the last one short


def json_instances(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON objects: NaN becomes null, integers stay integers."""
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture
def rows(penguin_sample) -> pd.DataFrame:
    """Demo rows, one of them with every measurement missing."""
    frame = penguin_sample(ROWS, seed=1)
    frame.loc[5, ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]] = None
    return frame


@pytest.fixture
def ids() -> list[str]:
    # Leading zeros: an id like "007" must come back as "007", never as the number 7.
    return [f"{n:03d}" for n in range(7, 7 + ROWS)]


@pytest.fixture
def submitted(client, worker, rows, ids) -> dict:
    """A JSON batch with string ids, accepted and queued."""
    instances = [{ID_COLUMN: row_id, **row} for row_id, row in zip(ids, json_instances(rows), strict=True)]
    response = client.post("/jobs", json={"instances": instances, "id_column": ID_COLUMN})
    body = response.get_json()
    assert response.status_code == 202, body
    assert body["status"] == "queued"
    assert response.headers["Location"] == body["status_url"]
    return body


def test_json_batch_succeeds_with_progress_timestamps_and_result_url(
    client, submitted, wait_for_job, trained_version
) -> None:
    """A chunked JSON batch ends succeeded with done == total, ordered timestamps and a result_url."""
    job_id = submitted["job_id"]

    record = wait_for_job(client, job_id)

    assert record["status"] == "succeeded", record
    assert record["kind"] == "batch"
    assert record["progress"] == {"done": ROWS, "total": ROWS}
    submitted_at, started_at, finished_at = (
        datetime.fromisoformat(record[name]) for name in ("submitted_at", "started_at", "finished_at")
    )
    assert submitted_at <= started_at <= finished_at
    assert record["result_url"].endswith(f"/jobs/{job_id}/result")
    assert record["model_version"] == trained_version
    assert record["id_column"] == ID_COLUMN
    assert "error" not in record


def test_json_batch_result_equals_in_process_predictions(
    client, submitted, wait_for_job, trained_version, rows, ids, in_process_predictions, get_result, check_predictions
) -> None:
    """GET /jobs/<id>/result holds the model's own predictions, probabilities and warnings, row for row."""
    record = wait_for_job(client, submitted["job_id"])
    assert record["status"] == "succeeded", record

    status, mimetype, body = get_result(client, submitted["job_id"])

    assert status == 200 and mimetype == "application/json"
    result = json.loads(body)
    expected = in_process_predictions(trained_version, rows)
    assert result["job_id"] == submitted["job_id"]
    assert result["model_version"] == trained_version
    assert result["ids"] == ids
    check_predictions(result, expected)
    # Row numbers in warnings count from the batch's first row, across chunk boundaries.
    assert result["warnings"] == expected.warnings
    assert {w["row"] for w in result["warnings"] if w["kind"] == "missing"} >= {5}
    assert record["data_quality"] == expected.quality


def test_json_batch_result_as_csv_keeps_input_columns_and_ids(
    client, submitted, wait_for_job, trained_version, rows, ids, in_process_predictions, get_result
) -> None:
    """?format=csv gives the input columns as sent (ids still "007"), then prediction and probability_<class>."""
    record = wait_for_job(client, submitted["job_id"])
    assert record["status"] == "succeeded", record

    status, mimetype, body = get_result(client, submitted["job_id"], format="csv")

    assert status == 200 and mimetype == "text/csv"
    expected = in_process_predictions(trained_version, rows)
    table = pd.read_csv(io.BytesIO(body), dtype={ID_COLUMN: str})
    probability_columns = [f"probability_{label}" for label in expected.classes]
    assert list(table.columns) == [ID_COLUMN, *rows.columns, "prediction", *probability_columns]
    assert body.decode().splitlines()[1].startswith("007,")
    assert table[ID_COLUMN].tolist() == ids
    pd.testing.assert_frame_equal(table[list(rows.columns)], rows, check_dtype=False)
    assert table["prediction"].tolist() == expected.labels
    pd.testing.assert_frame_equal(
        table[probability_columns],
        pd.DataFrame(expected.probabilities, columns=probability_columns),
        check_exact=False,
        rtol=0,
        atol=PARITY_TOLERANCE,  # the compiled path, within the tolerance checked at training
    )


def test_predict_beyond_sync_max_rows_is_queued_and_completes(
    client, worker, settings, penguin_sample, wait_for_job, trained_version, in_process_predictions, get_result
) -> None:
    """POST /predict over sync_max_rows answers 202 with Location and status_url; that job succeeds."""
    rows = penguin_sample(settings.sync_max_rows + 5, seed=3)

    response = client.post("/predict", json={"instances": json_instances(rows)})

    body = response.get_json()
    assert response.status_code == 202, body
    assert body["kind"] == "batch" and body["status"] == "queued"
    assert body["status_url"].endswith(f"/jobs/{body['job_id']}")
    assert response.headers["Location"] == body["status_url"]
    record = wait_for_job(client, body["job_id"])
    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": len(rows), "total": len(rows)}
    status, _, result = get_result(client, body["job_id"])
    assert status == 200
    assert json.loads(result)["predictions"] == in_process_predictions(trained_version, rows).labels


def test_predict_at_sync_max_rows_answers_at_once(client, settings, penguin_sample, trained_version) -> None:
    """POST /predict with exactly sync_max_rows rows is answered in the response (200), not queued."""
    rows = penguin_sample(settings.sync_max_rows, seed=4)

    response = client.post("/predict", json={"instances": json_instances(rows)})

    body = response.get_json()
    assert response.status_code == 200, body
    assert body["model_version"] == trained_version
    assert len(body["predictions"]) == settings.sync_max_rows

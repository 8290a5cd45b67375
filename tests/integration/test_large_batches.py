"""A 100,000-row CSV through the queue, uploaded as a raw text/csv body and as a multipart file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from shared.settings import Settings

pytestmark = pytest.mark.integration

BIG_ROWS = 100_000
CHUNK_ROWS = 10_000
ID_COLUMN = "row_id"
# Known rows given a year after every training year (2007-2009): each must be counted above_training_max.
YEAR_OUTLIER_ROWS = (0, 9_999, 10_000, 54_321, 99_999)
OUTLIER_YEAR = 2031


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Ten chunks of 10,000 rows: big enough to be realistic, few enough for a 2-process worker."""
    return settings.model_copy(update={"job_chunk_rows": CHUNK_ROWS})


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory, penguin_sample) -> Path:
    """Demo rows sampled with a fixed seed, string ids with leading zeros, a few years out of range."""
    frame = penguin_sample(BIG_ROWS, seed=2024)
    frame.loc[list(YEAR_OUTLIER_ROWS), "year"] = OUTLIER_YEAR
    frame.insert(0, ID_COLUMN, [f"{n:06d}" for n in range(BIG_ROWS)])
    path = tmp_path_factory.mktemp("big") / "penguins_100k.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def big_frame(big_csv: Path) -> pd.DataFrame:
    return pd.read_csv(big_csv, dtype={ID_COLUMN: str})


def check_big_job(
    client, job_id, wait_for_job, version, big_frame, in_process_predictions, get_result, check_predictions
):
    record = wait_for_job(client, job_id, timeout_s=120)
    assert record["status"] == "succeeded", record
    assert record["progress"] == {"done": BIG_ROWS, "total": BIG_ROWS}

    status, _, body = get_result(client, job_id)
    assert status == 200
    result = json.loads(body)
    expected = in_process_predictions(version, big_frame.drop(columns=ID_COLUMN))
    assert result["ids"] == big_frame[ID_COLUMN].tolist()
    check_predictions(result, expected)
    assert result["warnings"] == expected.warnings

    quality = record["data_quality"]
    assert quality == expected.quality
    assert quality["year"] == {"above_training_max": len(YEAR_OUTLIER_ROWS)}
    flagged_years = [w["row"] for w in result["warnings"] if w["feature"] == "year"]
    assert flagged_years == list(YEAR_OUTLIER_ROWS)


def test_100k_row_csv_body_matches_in_process_predictions(
    client,
    worker,
    big_csv,
    big_frame,
    trained_version,
    wait_for_job,
    in_process_predictions,
    get_result,
    check_predictions,
) -> None:
    """A 100,000-row text/csv body, streamed from a file, is scored in chunks exactly as the model scores it directly,
    and its data-quality summary counts the injected out-of-range years."""
    with open(big_csv, "rb") as body:
        response = client.post(
            "/jobs",
            query_string={"id_column": ID_COLUMN},
            input_stream=body,
            content_type="text/csv",
            content_length=big_csv.stat().st_size,
        )
    assert response.status_code == 202, response.get_json()

    check_big_job(
        client,
        response.get_json()["job_id"],
        wait_for_job,
        trained_version,
        big_frame,
        in_process_predictions,
        get_result,
        check_predictions,
    )


def test_100k_row_multipart_upload_matches_in_process_predictions(
    client,
    worker,
    big_csv,
    big_frame,
    trained_version,
    wait_for_job,
    in_process_predictions,
    get_result,
    check_predictions,
) -> None:
    """The same 100,000 rows as a multipart/form-data field `file` give the same row-for-row result and summary."""
    with open(big_csv, "rb") as upload:
        # Encoded in memory: the test client's own encoder spills bodies over 500 kB to a temporary
        # file that it never closes, which filterwarnings=error turns into a failure.
        boundary, body = encode_multipart(
            {"file": FileStorage(upload, big_csv.name, content_type="text/csv"), "id_column": ID_COLUMN}
        )
    response = client.post("/jobs", data=body, content_type=f'multipart/form-data; boundary="{boundary}"')
    assert response.status_code == 202, response.get_json()

    check_big_job(
        client,
        response.get_json()["job_id"],
        wait_for_job,
        trained_version,
        big_frame,
        in_process_predictions,
        get_result,
        check_predictions,
    )

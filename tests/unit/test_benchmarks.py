"""The benchmark suite's own pieces: the apps it measures predictq beside, the wrk output
parser, the synthetic table and the target verdicts. No timing is asserted here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

# benchmarks/ is not part of the installed product: import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.apps import floor, textbook
from benchmarks.memory import API_MASTER, API_WORKER, REDIS, ROOT, WORKER_MAIN, WORKER_POOL, classify
from benchmarks.synthetic import (
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    NUMERIC_COLUMNS,
    TARGET,
    request_rows,
    synthetic_table,
    write_batch_csv,
)
from benchmarks.targets import evaluate_targets
from benchmarks.wrk import parse_wrk_output, write_script
from shared.store import MODEL_FILE, ModelStore
from shared.training import TrainingOptions, train

# Captured from `wrk --latency` with the suite's script against the floor app.
WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:18123/predict
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.08ms    0.97ms   9.51ms   92.58%
    Req/Sec     1.00k   232.25     1.34k    63.33%
  Latency Distribution
     50%  828.00us
     75%    0.97ms
     90%    1.50ms
     99%    5.93ms
  3002 requests in 3.01s, 483.86KB read
Requests/sec:    998.62
Transfer/sec:    160.96KB
PREDICTQ_BENCH_RESULT {"requests": 3002, "duration_us": 3006138, "bytes": 495475, "connect_errors": 0, \
"read_errors": 0, "write_errors": 0, "timeouts": 0, "non_2xx": 0, "mean_us": 1082.4, "max_us": 9506.0, \
"p50_us": 828.0, "p90_us": 1498.0, "p99_us": 5926.0}
"""


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table(2_000)


@pytest.fixture
def model_path(table: pd.DataFrame, store: ModelStore) -> Path:
    """predictq's saved model.joblib of a logistic model trained on the synthetic table."""
    trained = train(table, TrainingOptions(target=TARGET, estimator="logistic"))
    version = store.save(trained, {"path": "synthetic", "sha256": "0" * 64, "rows": len(table)})
    return store.storage.root / "models" / version / MODEL_FILE


def test_synthetic_table_is_reproducible() -> None:
    """The same seed gives the same table value for value; another seed another table."""
    pd.testing.assert_frame_equal(synthetic_table(500, seed=7), synthetic_table(500, seed=7))
    assert not synthetic_table(500, seed=7).equals(synthetic_table(500, seed=8))


def test_synthetic_table_has_the_stated_shape() -> None:
    """20,000 rows, 8 numeric and 3 categorical features each with missing values, a binary target."""
    frame = synthetic_table()
    assert frame.shape == (20_000, 12)
    assert list(frame.columns) == [*FEATURE_COLUMNS, TARGET]
    assert all(pd.api.types.is_float_dtype(frame[name]) for name in NUMERIC_COLUMNS)
    assert not any(pd.api.types.is_numeric_dtype(frame[name]) for name in CATEGORICAL_COLUMNS)
    missing_share = frame[list(FEATURE_COLUMNS)].isna().mean()
    assert missing_share.between(0.03, 0.07).all()
    assert set(frame[TARGET].unique()) == {0, 1}


def test_synthetic_target_depends_on_the_features() -> None:
    """The outcome rate moves with a numeric feature and with a categorical one."""
    frame = synthetic_table()
    high = frame["num_0"] > frame["num_0"].median()
    assert frame.loc[high, TARGET].mean() - frame.loc[~high, TARGET].mean() > 0.2
    by_level = frame.groupby("cat_c")[TARGET].mean()
    assert by_level["cat_c_11"] - by_level["cat_c_0"] > 0.2


def test_request_rows_carry_missing_values_as_null(table: pd.DataFrame) -> None:
    """The one-row body has a null numeric and a null categorical; bodies are plain JSON."""
    (row,) = request_rows(table, 1)
    assert any(row[name] is None for name in NUMERIC_COLUMNS)
    assert any(row[name] is None for name in CATEGORICAL_COLUMNS)
    rows = request_rows(table, 100)
    assert rows == request_rows(table, 100)
    assert "null" in json.dumps(rows) and "NaN" not in json.dumps(rows)


def test_batch_csv_reads_back_with_its_gaps(tmp_path: Path) -> None:
    """The batch file is written in blocks, has every feature and no target, and keeps its gaps."""
    frame = pd.read_csv(write_batch_csv(tmp_path / "batch.csv", 2_500, block_rows=1_000))
    assert frame.shape == (2_500, len(FEATURE_COLUMNS))
    assert frame.isna().any().all()


def test_floor_answers_a_constant() -> None:
    """The floor parses the body and answers the same constant whatever the rows."""
    client = floor.create_app().test_client()
    response = client.post("/predict", json={"instances": [{"num_0": 1.0}, {"num_0": None}]})
    assert response.status_code == 200
    assert response.get_json() == floor.CONSTANT_ANSWER
    assert client.get("/healthz").status_code == 200


def test_textbook_answers_what_the_pipeline_says(table: pd.DataFrame, model_path: Path) -> None:
    """The textbook app's labels and probabilities are predict_proba's on the same rows."""
    rows = request_rows(table, 1) + request_rows(table, 20)
    response = textbook.create_app(str(model_path)).test_client().post("/predict", json={"instances": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    pipeline = joblib.load(model_path)
    expected = pipeline.predict_proba(pd.DataFrame(rows))
    np.testing.assert_allclose(body["probabilities"], expected)
    assert body["predictions"] == pipeline.classes_[expected.argmax(axis=1)].tolist()


def test_wrk_output_is_parsed_from_the_done_hook_line() -> None:
    """Percentiles come in ms from the script's JSON line; requests/s from its count and duration."""
    result = parse_wrk_output(WRK_OUTPUT, connections=1)
    assert result.requests == 3002
    assert result.p50_ms == pytest.approx(0.828)
    assert result.p90_ms == pytest.approx(1.498)
    assert result.p99_ms == pytest.approx(5.926)
    assert result.requests_per_s == pytest.approx(3002 / 3.006138, abs=0.1)
    assert (result.socket_errors, result.non_2xx) == (0, 0)


def test_wrk_output_without_the_result_line_is_refused() -> None:
    """wrk's text alone (the script did not run) is an error, not zeros."""
    with pytest.raises(ValueError, match="PREDICTQ_BENCH_RESULT"):
        parse_wrk_output(WRK_OUTPUT.split("PREDICTQ_BENCH_RESULT")[0], connections=1)


def test_wrk_script_posts_the_body_file(tmp_path: Path) -> None:
    """The script reads the body from its file and sends it as JSON."""
    body = tmp_path / "body.json"
    script = write_script(body, tmp_path / "post.lua").read_text()
    assert f"[[{body.resolve()}]]" in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert 'wrk.method = "POST"' in script


def test_process_roles_follow_the_local_stack_tree() -> None:
    """Processes under `predictq up` are named by command line and parent."""
    assert classify("python -m predictq.cli up", None) == ROOT
    assert classify("valkey-server 127.0.0.1:6390", ROOT) == REDIS
    assert classify("python -m gunicorn --config python:api.gunicorn_conf", ROOT) == API_MASTER
    assert classify("python -m gunicorn --config python:api.gunicorn_conf", API_MASTER) == API_WORKER
    assert classify("python -m predictq.cli worker", ROOT) == WORKER_MAIN
    assert classify("python -m predictq.cli worker", WORKER_MAIN) == WORKER_POOL


def test_targets_compare_predictq_with_floor_and_textbook() -> None:
    """Each ratio is computed from the figures it names; a figure not measured gives no verdict."""

    def shape(p50_ms: float, rps: float) -> dict:
        return {"1_rows_1_conn": {"p50_ms": p50_ms}, "1_rows_16_conn": {"requests_per_s": rps}}

    model = {
        "http": {"floor": shape(0.5, 3000), "textbook": shape(10.0, 150), "predictq": shape(0.9, 2500)},
        "vectorized": {"rows_per_s": 1_000_000},
        "batch": [{"rows": 1_000_000, "worker_processes": 2, "rows_per_s": 400_000, "memory": {}}],
    }
    verdicts = {row["target"]: (row["value"], row["verdict"]) for row in evaluate_targets({"m": model})}
    assert verdicts["latency_vs_floor"] == (pytest.approx(1.8), "pass")
    assert verdicts["textbook_latency_vs_predictq"] == (pytest.approx(10 / 0.9), "pass")
    assert verdicts["rps_vs_floor"] == (pytest.approx(2500 / 3000), "pass")
    assert verdicts["rps_vs_textbook"] == (pytest.approx(2500 / 150), "pass")
    assert verdicts["batch_vs_in_process"] == (pytest.approx(0.4), "miss")
    assert verdicts["large_latency_vs_textbook"] == (None, "not measured")
    assert verdicts["worker_rss"] == (None, "not measured")

"""Batch scoring on files: uploads, fail-fast validation, and split / score / join with a real model."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from pathlib import Path

import pandas as pd
import pytest

from shared.batch import (
    COPY_BLOCK_BYTES,
    JobFiles,
    remove_chunks,
    save_upload,
    score_chunk,
    split_input,
    validate_csv,
    write_json_input,
    write_results,
)
from shared.errors import BadRequest, InvalidInput, PayloadTooLarge
from shared.inputs import ABOVE_MAX, BELOW_MIN, MISSING, UNKNOWN_CATEGORY
from shared.lifecycle import train_version
from shared.serving import prediction_response
from shared.storage import LocalStorage, ObjectStorage
from shared.store import LoadedModel, ModelStore
from shared.training import TrainingOptions

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
FEATURES = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A small random forest on species, trained and loaded through the real lifecycle code."""
    store = ModelStore(LocalStorage(tmp_path_factory.mktemp("batch-models")))
    options = TrainingOptions(target="species", estimator="random_forest", params={"n_estimators": 20})
    version = train_version(store, PENGUINS_CSV, options)["version"]
    return store.load(version)


@pytest.fixture
def rows() -> pd.DataFrame:
    """Ten complete penguins from all three islands, with an id column of zero-padded strings."""
    table = pd.read_csv(PENGUINS_CSV).dropna()
    picked = pd.concat([table.iloc[0:4], table.iloc[160:163], table.iloc[300:303]]).reset_index(drop=True)
    picked.insert(0, "penguin_id", [f"{i:03d}" for i in range(1, len(picked) + 1)])
    return picked


@pytest.fixture
def files(tmp_path: Path) -> JobFiles:
    return JobFiles(tmp_path / "jobs", "job1").create()


def inject_faults(frame: pd.DataFrame) -> pd.DataFrame:
    """Out-of-range, unknown and missing values in known rows (see EXPECTED_QUALITY)."""
    frame = frame.copy()
    frame["island"] = frame["island"].astype(object)
    frame["sex"] = frame["sex"].astype(object)
    frame.loc[[1, 7], "bill_length_mm"] = 99.0
    frame.loc[4, "flipper_length_mm"] = 100
    frame.loc[[2, 5, 8], "island"] = "Atlantis"
    frame.loc[6, "sex"] = None
    return frame


EXPECTED_QUALITY = {
    "bill_length_mm": {ABOVE_MAX: 2},
    "flipper_length_mm": {BELOW_MIN: 1},
    "island": {UNKNOWN_CATEGORY: 3},
    "sex": {MISSING: 1},
}


def run_batch(files: JobFiles, model: LoadedModel, chunk_rows: int, id_column: str | None) -> dict:
    """What the worker's split, score and finalize tasks do, in one process."""
    rows, chunks = split_input(files, chunk_rows, id_column)
    scored = [score_chunk(files, chunk, model, chunk_rows, id_column) for chunk in range(chunks)]
    assert sum(scored) == rows
    quality = write_results(files, chunks, model, "job1", id_column)
    remove_chunks(files)
    return quality


def as_instances(frame: pd.DataFrame) -> list[dict]:
    """JSON rows as a client would send them: NaN becomes null."""
    return json.loads(frame.to_json(orient="records"))


def read_result_json(files: JobFiles) -> dict:
    return json.loads(files.result_json.read_text())


class ReadRecorder(io.BytesIO):
    """An upload stream that records the size asked of each read()."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(-1 if size is None else size)
        return super().read(size)


# --- save_upload ---------------------------------------------------------------------------


def test_save_upload_copies_in_blocks(tmp_path: Path) -> None:
    """An upload is copied block by block (never read whole) and its size returned."""
    data = b"a,b\n" + b"1,2\n" * (COPY_BLOCK_BYTES // 2)  # a little over two blocks
    stream = ReadRecorder(data)
    target = tmp_path / "sub" / "input.csv"
    assert save_upload(stream, target, max_bytes=len(data)) == len(data)
    assert target.read_bytes() == data
    assert len(stream.sizes) >= 3
    assert all(0 < size <= COPY_BLOCK_BYTES for size in stream.sizes)


def test_save_upload_over_limit_is_refused_and_removed(tmp_path: Path) -> None:
    """One byte over max_bytes raises PayloadTooLarge and leaves no partial file."""
    target = tmp_path / "input.csv"
    with pytest.raises(PayloadTooLarge, match="1000 bytes"):
        save_upload(io.BytesIO(b"x" * 1001), target, max_bytes=1000)
    assert not target.exists()


def test_save_upload_over_limit_after_several_blocks_is_removed(tmp_path: Path) -> None:
    """The limit is checked as blocks arrive, so a file already partly written is removed too."""
    target = tmp_path / "input.csv"
    with pytest.raises(PayloadTooLarge):
        save_upload(io.BytesIO(b"x" * (COPY_BLOCK_BYTES * 2 + 1)), target, max_bytes=COPY_BLOCK_BYTES + 10)
    assert not target.exists()


# --- validate_csv --------------------------------------------------------------------------


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.csv"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data", [b"", b"  \n\n "], ids=["empty", "blank"])
def test_validate_csv_refuses_empty_upload(tmp_path: Path, model: LoadedModel, data: bytes) -> None:
    """An empty or whitespace-only upload is a BadRequest saying it is empty."""
    with pytest.raises(BadRequest, match="empty"):
        validate_csv(write(tmp_path, data), model.schema)


def test_validate_csv_refuses_header_without_rows(tmp_path: Path, model: LoadedModel) -> None:
    """A header and no data rows is a BadRequest, not a job that fails later."""
    with pytest.raises(BadRequest, match="no rows"):
        validate_csv(write(tmp_path, (",".join(FEATURES) + "\n").encode()), model.schema)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        gzip.compress(PENGUINS_CSV.read_bytes()),
        "island,sex\nBiscoe,m\u00e4le\n".encode("latin-1") + b"Dream,male\n" * 3,
    ],
    ids=["png", "gzip", "latin-1"],
)
def test_validate_csv_refuses_binary_or_non_utf8(tmp_path: Path, model: LoadedModel, data: bytes) -> None:
    """Binary content or text in another encoding is a BadRequest, before pandas guesses at it."""
    with pytest.raises(BadRequest, match="not CSV text"):
        validate_csv(write(tmp_path, data), model.schema)


def test_validate_csv_names_missing_feature_column(tmp_path: Path, model: LoadedModel, rows: pd.DataFrame) -> None:
    """A CSV lacking a feature the model needs is InvalidInput with that column as the field."""
    path = tmp_path / "upload.csv"
    rows.drop(columns=["bill_depth_mm"]).to_csv(path, index=False)
    with pytest.raises(InvalidInput) as caught:
        validate_csv(path, model.schema)
    assert [e.field for e in caught.value.errors] == ["bill_depth_mm"]
    assert "bill_depth_mm" in caught.value.detail


def test_validate_csv_refuses_absent_id_column(tmp_path: Path, model: LoadedModel, rows: pd.DataFrame) -> None:
    """An id_column that is not in the header is InvalidInput naming it as the field."""
    path = tmp_path / "upload.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(InvalidInput) as caught:
        validate_csv(path, model.schema, id_column="tag")
    assert [e.field for e in caught.value.errors] == ["tag"]


def test_validate_csv_returns_the_header(tmp_path: Path, model: LoadedModel, rows: pd.DataFrame) -> None:
    """A good upload passes and its header is returned, extra columns included."""
    path = tmp_path / "upload.csv"
    rows.to_csv(path, index=False)
    assert validate_csv(path, model.schema, id_column="penguin_id") == list(rows.columns)


def test_validate_csv_without_schema_checks_only_the_table(tmp_path: Path) -> None:
    """With schema None (training uploads) any non-empty CSV table passes."""
    assert validate_csv(write(tmp_path, b"x,y\n1,2\n"), None) == ["x", "y"]


# --- split, score, join --------------------------------------------------------------------


def test_split_input_cuts_json_rows_into_chunks(files: JobFiles, rows: pd.DataFrame) -> None:
    """Ten rows at four per chunk make three chunk files and report (10, 3)."""
    write_json_input(files, as_instances(rows))
    assert split_input(files, 4) == (10, 3)
    assert [files.chunk_input(i).exists() for i in range(4)] == [True, True, True, False]


def test_split_input_refuses_an_input_without_rows(files: JobFiles, model: LoadedModel) -> None:
    """A header-only CSV that got this far still fails the job with BadRequest, not an empty result."""
    files.input_csv.write_text(",".join(FEATURES) + "\n")
    with pytest.raises(BadRequest, match="no rows"):
        split_input(files, 4)


def test_json_batch_result_matches_predict_response(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """result.json of a chunked JSON job is the /predict body for the same rows, plus the job id."""
    instances = as_instances(inject_faults(rows).drop(columns=["penguin_id", "species"]))
    write_json_input(files, instances)
    run_batch(files, model, chunk_rows=3, id_column=None)

    result = read_result_json(files)
    expected = prediction_response(model, pd.DataFrame(instances))
    assert result.pop("job_id") == "job1"
    assert list(result) == ["model_version", "predictions", "probabilities", "warnings"]
    assert result == expected
    assert len(result["predictions"]) == 10
    assert all(set(p) == set(CLASSES) for p in result["probabilities"])


def test_warnings_carry_batch_global_row_numbers(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """A warning in chunk 2 names the row's place in the whole batch, not in its chunk."""
    write_json_input(files, as_instances(inject_faults(rows)))
    run_batch(files, model, chunk_rows=3, id_column=None)

    warnings = read_result_json(files)["warnings"]
    assert [(w["row"], w["feature"], w["kind"]) for w in warnings] == [
        (1, "bill_length_mm", ABOVE_MAX),
        (2, "island", UNKNOWN_CATEGORY),
        (4, "flipper_length_mm", BELOW_MIN),
        (5, "island", UNKNOWN_CATEGORY),
        (6, "sex", MISSING),
        (7, "bill_length_mm", ABOVE_MAX),
        (8, "island", UNKNOWN_CATEGORY),
    ]
    assert warnings[-2]["value"] == 99.0


def test_quality_summary_counts_injected_faults(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """The summary adds each chunk's counts: per feature and kind, exactly what was injected."""
    write_json_input(files, as_instances(inject_faults(rows)))
    assert run_batch(files, model, chunk_rows=3, id_column=None) == EXPECTED_QUALITY


def test_clean_rows_have_an_empty_quality_summary(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Rows within what training saw produce no warnings and an empty summary."""
    write_json_input(files, as_instances(rows))
    assert run_batch(files, model, chunk_rows=4, id_column=None) == {}
    assert read_result_json(files)["warnings"] == []


def test_csv_batch_writes_input_columns_plus_predictions(
    files: JobFiles, model: LoadedModel, rows: pd.DataFrame
) -> None:
    """result.csv has every input column, then prediction, then probability_<class> per class."""
    inject_faults(rows).to_csv(files.input_csv, index=False)
    run_batch(files, model, chunk_rows=4, id_column="penguin_id")

    result = pd.read_csv(files.result_csv, dtype={"penguin_id": str})
    expected = prediction_response(model, pd.read_csv(files.input_csv))
    assert list(result.columns) == [*rows.columns, "prediction", *(f"probability_{c}" for c in CLASSES)]
    assert len(result) == 10
    assert result["prediction"].tolist() == expected["predictions"]
    for label in CLASSES:
        assert result[f"probability_{label}"].tolist() == pytest.approx([p[label] for p in expected["probabilities"]])


def test_csv_batch_result_json_matches_predict_response(
    files: JobFiles, model: LoadedModel, rows: pd.DataFrame
) -> None:
    """result.json of a chunked CSV job is the /predict body for the same rows, plus job id and ids."""
    inject_faults(rows).to_csv(files.input_csv, index=False)
    run_batch(files, model, chunk_rows=4, id_column="penguin_id")

    result = read_result_json(files)
    expected = prediction_response(model, pd.read_csv(files.input_csv))
    assert result.pop("job_id") == "job1"
    assert result.pop("ids") == rows["penguin_id"].tolist()
    assert result == expected


def test_id_column_values_are_preserved_as_text(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Ids such as "007" come back as "007" in both result files, never as the number 7."""
    rows.to_csv(files.input_csv, index=False)
    run_batch(files, model, chunk_rows=3, id_column="penguin_id")

    ids = [f"{i:03d}" for i in range(1, 11)]
    assert read_result_json(files)["ids"] == ids
    with open(files.result_csv) as handle:
        first_column = [line.split(",", 1)[0] for line in handle.read().splitlines()]
    assert first_column == ["penguin_id", *ids]


def test_json_batch_without_id_column_has_no_ids(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Without id_column, result.json has no ids key at all."""
    write_json_input(files, as_instances(rows))
    run_batch(files, model, chunk_rows=5, id_column=None)
    assert "ids" not in read_result_json(files)


def test_score_chunk_twice_gives_the_same_output(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Scoring a redelivered chunk again rewrites identical output (the task is idempotent)."""
    inject_faults(rows).to_csv(files.input_csv, index=False)
    split_input(files, 4, "penguin_id")

    first_rows = score_chunk(files, 1, model, 4, "penguin_id")
    first = pd.read_pickle(files.chunk_output(1))
    second_rows = score_chunk(files, 1, model, 4, "penguin_id")
    second = pd.read_pickle(files.chunk_output(1))
    assert first_rows == second_rows == 4
    assert first == second
    assert first["ids"] == ["005", "006", "007", "008"]
    assert [w["row"] for w in first["warnings"]] == [4, 5, 6, 7]


def test_rescoring_a_chunk_leaves_the_result_unchanged(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """A chunk scored once more before finalize does not change result.json or result.csv."""
    inject_faults(rows).to_csv(files.input_csv, index=False)
    run_batch(files, model, chunk_rows=4, id_column="penguin_id")
    result_json, result_csv = files.result_json.read_bytes(), files.result_csv.read_bytes()

    _, chunks = split_input(files, 4, "penguin_id")
    for chunk in [*range(chunks), 0]:
        score_chunk(files, chunk, model, 4, "penguin_id")
    write_results(files, chunks, model, "job1", "penguin_id")
    assert files.result_json.read_bytes() == result_json
    assert files.result_csv.read_bytes() == result_csv


def test_finalising_removes_chunk_files(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """After joining and removing the chunks, only the input and the two result files remain."""
    write_json_input(files, as_instances(rows))
    run_batch(files, model, chunk_rows=4, id_column=None)
    assert sorted(p.name for p in files.dir.iterdir()) == ["input.json", "result.csv", "result.json"]


def test_batch_on_object_storage_needs_no_shared_disk(model: LoadedModel, rows: pd.DataFrame, tmp_path: Path) -> None:
    """With an object store, split, score and join on two hosts' scratch dirs give the local result, and
    leave no file on either host: input, chunks and results live only in the store."""
    local = JobFiles(tmp_path / "local" / "jobs", "job1").create()
    inject_faults(rows).to_csv(local.input_csv, index=False)
    expected_quality = run_batch(local, model, chunk_rows=4, id_column="penguin_id")

    storage = ObjectStorage(f"memory://predictq-batch-{uuid.uuid4().hex}")
    host_a = JobFiles(tmp_path / "a" / "jobs", "job1", storage)
    host_b = JobFiles(tmp_path / "b" / "jobs", "job1", storage)
    storage.write_bytes("jobs/job1/input.csv", local.input_csv.read_bytes())
    rows_total, chunks = split_input(host_a, 4, "penguin_id")
    for chunk in range(chunks):
        score_chunk(host_a if chunk % 2 else host_b, chunk, model, 4, "penguin_id")
    quality = write_results(host_b, chunks, model, "job1", "penguin_id")
    remove_chunks(host_b)

    assert (rows_total, chunks, quality) == (10, 3, expected_quality)
    assert storage.read_bytes("jobs/job1/result.json") == local.result_json.read_bytes()
    assert storage.read_bytes("jobs/job1/result.csv") == local.result_csv.read_bytes()
    assert not storage.exists(host_b.key(host_b.chunk_input(0)))
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []

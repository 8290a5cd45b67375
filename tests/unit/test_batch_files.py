"""Batch scoring on files: uploads, fail-fast validation, and split / score / join with a real model."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from shared import batch
from shared.batch import (
    COPY_BLOCK_BYTES,
    JobFiles,
    is_job_id,
    remove_chunks,
    result_columns,
    save_upload,
    score_chunk,
    split_input,
    validate_csv,
    write_json_input,
    write_results,
)
from shared.errors import BadRequest, InvalidInput, PayloadTooLarge
from shared.inputs import ABOVE_MAX, BELOW_MIN, MISSING, UNKNOWN_CATEGORY
from shared.jobs import new_job_id
from shared.lifecycle import train_version
from shared.serving import prediction_response
from shared.settings import Settings
from shared.storage import LocalStorage, ObjectStorage
from shared.store import LoadedModel, ModelStore
from shared.training import TrainingOptions

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
JOB_ID = "0123456789abcdef0123456789abcdef"
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
    return JobFiles(tmp_path / "jobs", JOB_ID).create()


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
    quality = write_results(files, chunks, model, JOB_ID, id_column)
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
    assert result.pop("job_id") == JOB_ID
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
    assert result.pop("job_id") == JOB_ID
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
    first = files.chunk_output(1).read_bytes()
    second_rows = score_chunk(files, 1, model, 4, "penguin_id")
    assert first_rows == second_rows == 4
    assert files.chunk_output(1).read_bytes() == first
    output = files.read_table(files.chunk_output(1)).to_pylist()[0]
    assert json.loads(b"[" + output["ids"] + b"]") == ["005", "006", "007", "008"]
    assert [w["row"] for w in json.loads(b"[" + output["warnings"] + b"]")] == [4, 5, 6, 7]


def test_rescoring_a_chunk_leaves_the_result_unchanged(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """A chunk scored once more before finalize does not change result.json or result.csv."""
    inject_faults(rows).to_csv(files.input_csv, index=False)
    run_batch(files, model, chunk_rows=4, id_column="penguin_id")
    result_json, result_csv = files.result_json.read_bytes(), files.result_csv.read_bytes()

    _, chunks = split_input(files, 4, "penguin_id")
    for chunk in [*range(chunks), 0]:
        score_chunk(files, chunk, model, 4, "penguin_id")
    write_results(files, chunks, model, JOB_ID, "penguin_id")
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
    local = JobFiles(tmp_path / "local" / "jobs", JOB_ID).create()
    inject_faults(rows).to_csv(local.input_csv, index=False)
    expected_quality = run_batch(local, model, chunk_rows=4, id_column="penguin_id")

    storage = ObjectStorage(f"memory://predictq-batch-{uuid.uuid4().hex}")
    host_a = JobFiles(tmp_path / "a" / "jobs", JOB_ID, storage)
    host_b = JobFiles(tmp_path / "b" / "jobs", JOB_ID, storage)
    storage.write_bytes(f"jobs/{JOB_ID}/input.csv", local.input_csv.read_bytes())
    rows_total, chunks = split_input(host_a, 4, "penguin_id")
    for chunk in range(chunks):
        score_chunk(host_a if chunk % 2 else host_b, chunk, model, 4, "penguin_id")
    quality = write_results(host_b, chunks, model, JOB_ID, "penguin_id")
    remove_chunks(host_b)

    assert (rows_total, chunks, quality) == (10, 3, expected_quality)
    assert storage.read_bytes(f"jobs/{JOB_ID}/result.json") == local.result_json.read_bytes()
    assert storage.read_bytes(f"jobs/{JOB_ID}/result.csv") == local.result_csv.read_bytes()
    assert not storage.exists(host_b.key(host_b.chunk_input(0)))
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []
    assert [p for p in (tmp_path / "b").rglob("*") if p.is_file()] == []


# --- job ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    ["../models", "job1", "0123456789ABCDEF0123456789ABCDEF", "0" * 31, "0" * 33, "", f"{JOB_ID}/..", None, 7],
    ids=["traversal", "short-name", "upper-case", "31-hex", "33-hex", "empty", "suffix", "none", "int"],
)
def test_job_files_refuse_anything_but_a_job_id(tmp_path: Path, job_id: object) -> None:
    """JobFiles raises ValueError for an id new_job_id could not have made, before any path exists."""
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="not a job id"):
        JobFiles(tmp_path / "jobs", job_id, storage)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_job_files_accept_the_ids_jobs_are_made_with(tmp_path: Path) -> None:
    """Ids from shared.jobs.new_job_id name a directory under jobs/."""
    job_id = new_job_id()
    assert is_job_id(job_id)
    assert JobFiles(tmp_path / "jobs", job_id).dir == tmp_path / "jobs" / job_id


# --- chunk files ---------------------------------------------------------------------------


def chunk_table(files: JobFiles, chunk: int) -> pa.Table:
    return files.read_table(files.chunk_input(chunk))


def test_chunk_files_are_arrow_ipc_not_pickles(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Chunk inputs and outputs are Arrow IPC files (data only: loading one runs no code)."""
    rows.to_csv(files.input_csv, index=False)
    split_input(files, 4, "penguin_id")
    score_chunk(files, 0, model, 4, "penguin_id")
    for path in (files.chunk_input(0), files.chunk_output(0)):
        data = path.read_bytes()
        assert data.startswith(b"ARROW1") and data.endswith(b"ARROW1"), path
        with pytest.raises(pickle.UnpicklingError):
            pickle.loads(data)
    assert chunk_table(files, 0).num_rows == 4


def test_csv_chunks_keep_values_as_text_and_missing_as_missing(files: JobFiles) -> None:
    """Chunks hold the CSV's text as sent ("007", " 5 "), and empty fields or pandas' NA words as missing."""
    files.input_csv.write_bytes(b'id,a,b\n007, 5 ,x\n008,,NA\n009,"",n/a\n010,1e3,"say ""hi"", twice"\n')
    assert split_input(files, 10) == (4, 1)
    assert chunk_table(files, 0).to_pydict() == {
        "id": ["007", "008", "009", "010"],
        "a": [" 5 ", None, None, "1e3"],
        "b": ["x", None, None, 'say "hi", twice'],
    }


def test_csv_split_gives_chunks_of_exactly_chunk_rows(
    files: JobFiles, monkeypatch: pytest.MonkeyPatch, model: LoadedModel, rows: pd.DataFrame
) -> None:
    """However the reader's blocks fall, chunk n holds rows n*chunk_rows onwards, so row numbers
    in warnings stay chunk * chunk_rows + i."""
    monkeypatch.setattr(batch, "CSV_BLOCK_BYTES", 256)  # a few rows per block, cut mid-chunk
    frame = pd.concat([inject_faults(rows)] * 5, ignore_index=True)
    frame["penguin_id"] = [f"{i:03d}" for i in range(len(frame))]
    frame.to_csv(files.input_csv, index=False)

    rows_total, chunks = split_input(files, 7, "penguin_id")

    assert (rows_total, chunks) == (50, 8)
    assert [chunk_table(files, c).num_rows for c in range(chunks)] == [7] * 7 + [1]
    ids = [row_id for c in range(chunks) for row_id in chunk_table(files, c)["penguin_id"].to_pylist()]
    assert ids == frame["penguin_id"].tolist()
    run_batch(files, model, chunk_rows=7, id_column="penguin_id")
    expected = prediction_response(model, frame.drop(columns="penguin_id"))
    assert read_result_json(files)["warnings"] == expected["warnings"]


def test_csv_batch_reads_values_as_pandas_did(files: JobFiles, model: LoadedModel) -> None:
    """Numbers with spaces or a sign, NA words, true/false words and text with commas give the answers,
    warnings and ids that scoring the file as pandas reads it gives."""
    files.input_csv.write_text(
        "penguin_id,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year,note\n"
        '007,Biscoe, 45.1 ,14.5,+210,4500,male,2008,"big, heavy"\n'
        "008,Dream,39.5,17.4,186,NA,female,2007.0,TRUE\n"
        "009, Torgersen,40.3,18,195,3250,n/a,2007,\n"
        '010,Atlantis,99,1e1,181,3750,None,2009,"said ""hi"""\n'
    )
    run_batch(files, model, chunk_rows=3, id_column="penguin_id")

    result = read_result_json(files)
    expected = prediction_response(model, pd.read_csv(files.input_csv).drop(columns="penguin_id"))
    assert result.pop("job_id") == JOB_ID
    assert result.pop("ids") == ["007", "008", "009", "010"]
    assert result == expected
    assert {(w["row"], w["kind"]) for w in result["warnings"]} >= {(1, MISSING), (2, UNKNOWN_CATEGORY), (3, ABOVE_MAX)}


def test_result_csv_quotes_only_what_needs_quoting(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Input columns come back as sent: a value with a comma, quote or line break is quoted the way pandas
    quotes it, every other value is bare, a missing one is empty; floats read back as the same doubles."""
    frame = rows.copy()
    frame["note"] = ["plain", "a, b", 'say "hi"', "two\nlines", None, "", " padded ", "x", "y", "z"]
    frame.to_csv(files.input_csv, index=False)
    run_batch(files, model, chunk_rows=4, id_column="penguin_id")

    text = files.result_csv.read_text()
    assert text.startswith("penguin_id,species,island,") and text.endswith("\n")
    assert ',"a, b",' in text and ',"say ""hi""",' in text and ',"two\nlines",' in text
    assert ",plain," in text and ", padded ," in text and '"plain"' not in text
    result = pd.read_csv(files.result_csv, dtype={"penguin_id": str, "note": str}, keep_default_na=False)
    assert result["note"].tolist() == frame["note"].fillna("").tolist()
    expected = prediction_response(model, frame.drop(columns=["penguin_id", "note"]))
    for label in CLASSES:
        assert result[f"probability_{label}"].tolist() == [p[label] for p in expected["probabilities"]]


def test_a_ragged_row_fails_the_split_naming_the_fault(files: JobFiles) -> None:
    """A data row with more fields than the header is a BadRequest saying the input cannot be read as CSV."""
    files.input_csv.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(BadRequest, match=r"cannot be read as CSV: .*Expected 2 columns, got 3"):
        split_input(files, 10)


def test_split_memory_is_bounded_by_the_chunk_not_the_file(
    files: JobFiles, monkeypatch: pytest.MonkeyPatch, rows: pd.DataFrame
) -> None:
    """Splitting a file many times the reader's block holds only a few blocks and one chunk in Arrow
    memory at any chunk write: the file is never read whole."""
    block_bytes = 64 * 1024
    monkeypatch.setattr(batch, "CSV_BLOCK_BYTES", block_bytes)
    big = pd.concat([rows] * 8_000, ignore_index=True)  # 80,000 rows, about 4.3 MB
    big.to_csv(files.input_csv, index=False)
    file_bytes = files.input_csv.stat().st_size
    allocated: list[int] = []
    write_table = files.write_table

    def recording_write(path: Path, table: pa.Table) -> None:
        allocated.append(pa.total_allocated_bytes())
        write_table(path, table)

    monkeypatch.setattr(files, "write_table", recording_write)
    before = pa.total_allocated_bytes()
    assert split_input(files, 2_000, "penguin_id") == (80_000, 40)
    peak = max(allocated) - before
    assert peak < 24 * block_bytes < file_bytes / 2, (peak, file_bytes)


# --- JSON rows -----------------------------------------------------------------------------


def test_json_input_is_a_json_array_with_one_row_per_line(files: JobFiles, rows: pd.DataFrame) -> None:
    """input.json parses as the rows sent, and holds one row per line so it can be split line by line."""
    instances = as_instances(rows)
    write_json_input(files, instances)
    text = files.input_json.read_text()
    assert json.loads(text) == instances
    assert text.splitlines()[0] == "[" and text.splitlines()[-1] == "]"
    assert len(text.splitlines()) == len(instances) + 2


def test_json_input_written_whole_on_one_line_still_splits(files: JobFiles, rows: pd.DataFrame) -> None:
    """An input.json written by an earlier version (one line) splits as before."""
    files.input_json.write_text(json.dumps(as_instances(rows)))
    assert split_input(files, 4) == (10, 3)


def test_json_values_keep_their_types(files: JobFiles, model: LoadedModel, rows: pd.DataFrame) -> None:
    """Ids come back exactly as sent, whatever their JSON type: numbers stay numbers, text stays text,
    mixed columns and integers beyond 64 bits are kept too."""
    ids = [7, "007", 7.5, True, None, 2**70, {"a": 1}, [1, 2], 9, "x"]
    instances = [{"ref": ref, **row} for ref, row in zip(ids, as_instances(rows), strict=True)]
    write_json_input(files, instances)
    run_batch(files, model, chunk_rows=4, id_column="ref")
    assert read_result_json(files)["ids"] == ids

    numbers = [{"ref": n, **row} for n, row in enumerate(as_instances(rows))]
    write_json_input(files, numbers)
    run_batch(files, model, chunk_rows=4, id_column="ref")
    assert read_result_json(files)["ids"] == list(range(10))
    assert pd.read_csv(files.result_csv)["ref"].tolist() == list(range(10))


# --- result columns ------------------------------------------------------------------------


def test_validate_csv_refuses_a_prediction_column(tmp_path: Path, model: LoadedModel, rows: pd.DataFrame) -> None:
    """An input column named prediction would be overwritten in result.csv: InvalidInput naming it."""
    path = tmp_path / "upload.csv"
    rows.assign(prediction="mine").to_csv(path, index=False)
    with pytest.raises(InvalidInput, match="prediction") as caught:
        validate_csv(path, model.schema)
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("prediction", "the result has its own column of this name; rename the input column")
    ]


def test_validate_csv_refuses_a_probability_column_of_the_model(
    tmp_path: Path, model: LoadedModel, rows: pd.DataFrame
) -> None:
    """Given the model's result columns, probability_<class> is refused; another probability_ name is not."""
    assert result_columns(model) == ["prediction", *(f"probability_{c}" for c in CLASSES)]
    path = tmp_path / "upload.csv"
    rows.assign(probability_Gentoo=0.5).to_csv(path, index=False)
    with pytest.raises(InvalidInput) as caught:
        validate_csv(path, model.schema, result_columns=result_columns(model))
    assert [e.field for e in caught.value.errors] == ["probability_Gentoo"]
    rows.assign(probability_rain=0.5).to_csv(path, index=False)
    assert "probability_rain" in validate_csv(path, model.schema, result_columns=result_columns(model))


def test_split_refuses_result_columns_in_csv_and_json_inputs(
    files: JobFiles, model: LoadedModel, rows: pd.DataFrame
) -> None:
    """The split refuses what validation may not have known (probability columns), for both inputs."""
    rows.assign(probability_Adelie=1).to_csv(files.input_csv, index=False)
    with pytest.raises(InvalidInput, match="probability_Adelie"):
        split_input(files, 4, result_columns=result_columns(model))
    files.input_csv.unlink()
    write_json_input(files, [{"probability_Chinstrap": 0, **row} for row in as_instances(rows)])
    with pytest.raises(InvalidInput, match="probability_Chinstrap"):
        split_input(files, 4, result_columns=result_columns(model))
    assert not files.chunks_dir.exists()


def test_json_rows_with_a_prediction_key_are_refused(files: JobFiles, rows: pd.DataFrame) -> None:
    """write_json_input refuses a row carrying prediction and stores nothing."""
    instances = as_instances(rows)
    instances[3]["prediction"] = "Adelie"
    with pytest.raises(InvalidInput) as caught:
        write_json_input(files, instances)
    assert [e.field for e in caught.value.errors] == ["prediction"]
    assert not files.input_json.exists()


# --- header limits -------------------------------------------------------------------------


@pytest.fixture
def no_csv_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Arrow's CSV parser is asked to read anything."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CSV parser was called")

    monkeypatch.setattr(batch.pcsv, "open_csv", refuse)


def test_a_million_column_header_is_refused_before_parsing(tmp_path: Path, model: LoadedModel, no_csv_parser) -> None:
    """A 1,000,000-column header (the 7.5 MiB upload that cost 1 GiB) is refused from its bytes alone."""
    header = ",".join(f"c{i}" for i in range(1_000_000))
    path = write(tmp_path, (header + "\n" + "1," * 999_999 + "1\n").encode())
    with pytest.raises(BadRequest, match=r"longer than 262144 bytes.*PREDICTQ_MAX_CSV_HEADER_BYTES"):
        validate_csv(path, model.schema)


def test_too_many_columns_are_refused_before_parsing(tmp_path: Path, model: LoadedModel, no_csv_parser) -> None:
    """A header within the byte limit but over max_columns is refused, naming the count and the setting."""
    path = write(tmp_path, (",".join(f"c{i}" for i in range(2_001)) + "\n" + "1," * 2_000 + "1\n").encode())
    with pytest.raises(BadRequest, match=r"2001 columns; at most 2000.*PREDICTQ_MAX_CSV_COLUMNS"):
        validate_csv(path, model.schema)
    with pytest.raises(BadRequest, match="longer than 1024 bytes"):
        validate_csv(path, model.schema, max_header_bytes=1024)


def test_limits_are_settings_with_the_same_defaults() -> None:
    """PREDICTQ_MAX_CSV_HEADER_BYTES and PREDICTQ_MAX_CSV_COLUMNS exist, defaulting to what validate_csv uses."""
    settings = Settings()
    assert (settings.max_csv_header_bytes, settings.max_csv_columns) == (256 * 1024, 2_000)
    assert Settings(max_csv_columns=5, max_csv_header_bytes=4096).max_csv_columns == 5


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path, model: LoadedModel) -> None:
    """A repeated column name is ambiguous: InvalidInput naming it."""
    path = write(tmp_path, (",".join([*FEATURES, "island"]) + "\nBiscoe,1,2,3,4,male,2008,Dream\n").encode())
    with pytest.raises(InvalidInput, match="more than once") as caught:
        validate_csv(path, model.schema)
    assert [e.field for e in caught.value.errors] == ["island"]


def test_a_row_longer_than_the_reader_block_fails_the_split_saying_so(
    files: JobFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the CSV reader cannot hold in one block is a BadRequest naming the limit, not Arrow's words."""
    monkeypatch.setattr(batch, "CSV_BLOCK_BYTES", 1024)
    files.input_csv.write_text("a,b\n1,2\n" + "x" * 5000 + ",3\n4,5\n")
    with pytest.raises(BadRequest, match="a row \\(or the header\\) is longer than 1024 bytes"):
        split_input(files, 10)


def test_the_header_limit_cannot_exceed_what_the_reader_holds() -> None:
    """PREDICTQ_MAX_CSV_HEADER_BYTES above the reader's block would accept headers no split can read."""
    with pytest.raises(ValidationError, match="max_csv_header_bytes"):
        Settings(max_csv_header_bytes=batch.CSV_BLOCK_BYTES + 1)


def test_json_text_columns_with_missing_values_are_scored(
    files: JobFiles, model: LoadedModel, rows: pd.DataFrame
) -> None:
    """JSON rows whose text features hold text or null are scored as /predict scores them."""
    instances = as_instances(rows.drop(columns=["penguin_id", "species"]))
    for row in instances[::3]:
        row["sex"] = None
    write_json_input(files, instances)
    run_batch(files, model, chunk_rows=4, id_column=None)
    result = read_result_json(files)
    assert result.pop("job_id") == JOB_ID
    assert result == prediction_response(model, pd.DataFrame(instances))
    assert [w["row"] for w in result["warnings"] if w["feature"] == "sex"] == [0, 3, 6, 9]

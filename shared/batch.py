"""Batch scoring on files: job input in, chunks scored apart, one result out.

Messages carry only a job id and a chunk number; rows travel through these files in the
data directory, which API and workers share.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from shared.errors import BadRequest, FieldError, InvalidInput, PayloadTooLarge
from shared.inputs import check_columns
from shared.schema import FeatureSchema
from shared.serving import score_frame
from shared.store import LoadedModel

COPY_BLOCK_BYTES = 1 << 20
SNIFF_BYTES = 64 * 1024
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"


class JobFiles:
    """The paths of one job's files under the jobs directory."""

    def __init__(self, jobs_dir: Path, job_id: str):
        self.dir = Path(jobs_dir) / job_id
        self.input_csv = self.dir / "input.csv"
        self.input_json = self.dir / "input.json"
        self.training_csv = self.dir / "training.csv"
        self.chunks_dir = self.dir / "chunks"
        self.result_json = self.dir / "result.json"
        self.result_csv = self.dir / "result.csv"

    def chunk_input(self, chunk: int) -> Path:
        return self.chunks_dir / f"{chunk:05d}.in.pkl"

    def chunk_output(self, chunk: int) -> Path:
        return self.chunks_dir / f"{chunk:05d}.out.pkl"

    def create(self) -> JobFiles:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _atomic_pickle(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pd.to_pickle(obj, tmp)
    os.replace(tmp, path)


def write_json_input(files: JobFiles, instances: list[dict]) -> None:
    files.create()
    files.input_json.write_text(json.dumps(instances))


def save_upload(stream: IO[bytes], path: Path, max_bytes: int) -> int:
    """Copy an upload to disk block by block (never whole in memory); return its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as out:
        while block := stream.read(COPY_BLOCK_BYTES):
            written += len(block)
            if written > max_bytes:
                out.close()
                path.unlink(missing_ok=True)
                raise PayloadTooLarge(
                    f"The upload is larger than the {max_bytes} bytes allowed (PREDICTQ_MAX_UPLOAD_BYTES)"
                )
            out.write(block)
    return written


def validate_csv(path: Path, schema: FeatureSchema | None, id_column: str | None = None) -> list[str]:
    """Fail fast on an upload that cannot become a job: not CSV text, empty, or lacking columns.

    Returns the header. ``schema`` None checks only that it is a non-empty CSV table.
    """
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        raise BadRequest("The uploaded CSV is empty")
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is fine; anything earlier is binary.
        if exc.start < len(head) - 4:
            raise BadRequest("The upload is not CSV text (binary content or not UTF-8)") from exc
    try:
        sample = pd.read_csv(path, nrows=5)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"The upload cannot be read as CSV: {exc}") from exc
    if sample.empty:
        raise BadRequest("The uploaded CSV has a header but no rows")
    columns = [str(c) for c in sample.columns]
    if schema is not None:
        check_columns(columns, schema)
    if id_column is not None and id_column not in columns:
        raise InvalidInput(
            f"id_column {id_column!r} is not a column of the upload",
            [FieldError("id_column not in the CSV header", field=id_column)],
        )
    return columns


def _input_chunks(files: JobFiles, chunk_rows: int, id_column: str | None) -> Iterator[pd.DataFrame]:
    if files.input_json.exists():
        rows = json.loads(files.input_json.read_text())
        for start in range(0, len(rows), chunk_rows):
            part = rows[start : start + chunk_rows]
            columns = list(dict.fromkeys(key for row in part for key in row))
            yield pd.DataFrame({c: pd.Series([row.get(c) for row in part], dtype=object) for c in columns})
    else:
        dtype = {id_column: str} if id_column else None  # carried through unchanged: "007" stays "007"
        yield from pd.read_csv(files.input_csv, chunksize=chunk_rows, dtype=dtype)


def split_input(files: JobFiles, chunk_rows: int, id_column: str | None = None) -> tuple[int, int]:
    """Cut the job's input into chunk files; return (rows, chunks)."""
    files.chunks_dir.mkdir(parents=True, exist_ok=True)
    rows = chunks = 0
    for chunks, frame in enumerate(_input_chunks(files, chunk_rows, id_column), start=1):
        _atomic_pickle(frame, files.chunk_input(chunks - 1))
        rows += len(frame)
    if rows == 0:
        raise BadRequest("The job's input has no rows")
    return rows, chunks


def score_chunk(files: JobFiles, chunk: int, model: LoadedModel, chunk_rows: int, id_column: str | None) -> int:
    """Score one chunk file and write its output; return its row count. Idempotent."""
    frame = pd.read_pickle(files.chunk_input(chunk))
    prepared, predictions, probabilities = score_frame(model, frame, row_offset=chunk * chunk_rows)
    output = {
        "predictions": predictions,
        "probabilities": probabilities,
        "warnings": prepared.warnings(),
        "quality": prepared.quality_summary(),
        "ids": frame[id_column].tolist() if id_column else None,
    }
    _atomic_pickle(output, files.chunk_output(chunk))
    return len(frame)


def _merge_quality(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> None:
    for feature, counts in part.items():
        into = total.setdefault(feature, {})
        for kind, count in counts.items():
            into[kind] = into.get(kind, 0) + count


def write_results(files: JobFiles, chunks: int, model: LoadedModel, job_id: str, id_column: str | None) -> dict:
    """Join chunk outputs into result.json and result.csv; return the data-quality summary."""
    quality: dict[str, dict[str, int]] = {}
    tmp_csv = files.result_csv.with_suffix(".csv.tmp")
    with open(tmp_csv, "w", newline="") as csv_out:
        for chunk in range(chunks):
            frame = pd.read_pickle(files.chunk_input(chunk))
            output = pd.read_pickle(files.chunk_output(chunk))
            _merge_quality(quality, output["quality"])
            frame[PREDICTION_COLUMN] = output["predictions"]
            for label in model.classes or []:
                frame[f"{PROBABILITY_PREFIX}{label}"] = [p[str(label)] for p in output["probabilities"]]
            frame.to_csv(csv_out, header=chunk == 0, index=False)
    os.replace(tmp_csv, files.result_csv)

    tmp_json = files.result_json.with_suffix(".json.tmp")
    keys = ["predictions"] + (["probabilities"] if model.classes else []) + ["warnings"]
    keys += ["ids"] if id_column else []
    with open(tmp_json, "w") as out:
        out.write(json.dumps({"job_id": job_id, "model_version": model.version})[:-1])
        for key in keys:
            out.write(f', "{key}": [')
            first = True
            for chunk in range(chunks):
                for item in pd.read_pickle(files.chunk_output(chunk))[key]:
                    out.write(("" if first else ", ") + json.dumps(item))
                    first = False
            out.write("]")
        out.write("}")
    os.replace(tmp_json, files.result_json)
    shutil.rmtree(files.chunks_dir, ignore_errors=True)
    return quality

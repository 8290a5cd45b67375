"""Batch scoring on files: job input in, chunks scored apart, one result out.

Messages carry only a job id and a chunk number; rows travel through the job's files, kept
in the storage API and workers share (the data directory, or an object store), so any
worker on any host can take any step.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import pandas as pd

from shared.errors import BadRequest, FieldError, InvalidInput, PayloadTooLarge
from shared.inputs import check_columns
from shared.schema import FeatureSchema
from shared.serving import has_probabilities, score_frame
from shared.storage import LocalStorage, Storage
from shared.store import LoadedModel

COPY_BLOCK_BYTES = 1 << 20
SNIFF_BYTES = 64 * 1024
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
JOBS_PREFIX = "jobs"


class JobFiles:
    """One job's files: their keys in shared storage, and their paths on this host.

    Every file another step may need (input, chunks, results) is kept in ``storage`` under
    ``jobs/<id>/``. The paths under ``jobs_dir`` are this host's scratch space: an upload is
    saved and validated there before it is stored, a result is joined there before it is
    stored. On the default local storage (``jobs_dir`` is ``<data_dir>/jobs``) a path and its
    stored file are the same file, so nothing is ever copied.

    Parameters
    ----------
    jobs_dir : Path
        This host's directory for job files.
    job_id : str
        The job.
    storage : Storage or None
        Where the files are shared. None keeps them in ``jobs_dir`` itself.
    """

    def __init__(self, jobs_dir: Path, job_id: str, storage: Storage | None = None):
        jobs_dir = Path(jobs_dir)
        if storage is None:
            storage, prefix = LocalStorage(jobs_dir.parent), jobs_dir.name
        else:
            prefix = JOBS_PREFIX
        self.storage = storage
        self.prefix = f"{prefix}/{job_id}"
        self.dir = jobs_dir / job_id
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

    def key(self, path: Path) -> str:
        """The storage key of one of this job's paths."""
        return f"{self.prefix}/{path.relative_to(self.dir).as_posix()}"

    def create(self) -> JobFiles:
        """Make the scratch directory on this host."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return self

    def remove(self) -> None:
        """Delete the job's files: stored and scratch."""
        self.storage.delete_prefix(self.prefix)
        shutil.rmtree(self.dir, ignore_errors=True)

    def exists(self, path: Path) -> bool:
        return self.storage.exists(self.key(path))

    def open(self, path: Path) -> BinaryIO:
        """Read a stored file as a stream (the caller closes it)."""
        return self.storage.open_read(self.key(path))

    def size(self, path: Path) -> int:
        return self.storage.size(self.key(path))

    def store(self, local: Path, path: Path | None = None) -> None:
        """Store a scratch file as ``path`` (default: itself), then drop it from scratch."""
        self.storage.put_file(local, self.key(path or local), move=True)
        self.drop_empty_scratch()

    def write_object(self, path: Path, obj: Any) -> None:
        self.storage.write_bytes(self.key(path), pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def read_object(self, path: Path) -> Any:
        # Chunk pickles are written by predictq's own workers into storage only they and the
        # API can write, the same trust placed in the model files.
        return pickle.loads(self.storage.read_bytes(self.key(path)))

    @contextlib.contextmanager
    def local_copy(self, path: Path) -> Iterator[Path]:
        """``path`` on this host while the block runs: fetched from storage unless already here."""
        if path.exists():
            yield path
            return
        self.storage.get_file(self.key(path), path)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)
            self.drop_empty_scratch()

    def drop_empty_scratch(self) -> None:
        """Remove this host's job directory if nothing is left in it."""
        with contextlib.suppress(OSError):  # not empty: on local storage it holds the stored files
            self.dir.rmdir()


def write_json_input(files: JobFiles, instances: list[dict]) -> None:
    files.storage.write_bytes(files.key(files.input_json), json.dumps(instances).encode())


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
    if files.exists(files.input_json):
        with files.open(files.input_json) as handle:
            rows = json.load(handle)
        # One column list for every chunk: the CSV result has a single header.
        columns = list(dict.fromkeys(key for row in rows for key in row))
        for start in range(0, len(rows), chunk_rows):
            part = rows[start : start + chunk_rows]
            yield pd.DataFrame({c: pd.Series([row.get(c) for row in part], dtype=object) for c in columns})
    else:
        dtype = {id_column: str} if id_column else None  # carried through unchanged: "007" stays "007"
        # Streamed: a large upload is never whole in memory, nor copied to this host first.
        with files.open(files.input_csv) as handle, pd.read_csv(handle, chunksize=chunk_rows, dtype=dtype) as reader:
            yield from reader


def split_input(files: JobFiles, chunk_rows: int, id_column: str | None = None) -> tuple[int, int]:
    """Cut the job's input into chunk files; return (rows, chunks)."""
    rows = chunks = 0
    for chunks, frame in enumerate(_input_chunks(files, chunk_rows, id_column), start=1):
        files.write_object(files.chunk_input(chunks - 1), frame)
        rows += len(frame)
    if rows == 0:
        raise BadRequest("The job's input has no rows")
    return rows, chunks


def score_chunk(files: JobFiles, chunk: int, model: LoadedModel, chunk_rows: int, id_column: str | None) -> int:
    """Score one chunk file and write its output; return its row count. Idempotent."""
    frame = files.read_object(files.chunk_input(chunk))
    prepared, predictions, probabilities = score_frame(model, frame, row_offset=chunk * chunk_rows)
    output = {
        "predictions": predictions,
        "probabilities": probabilities,
        "warnings": prepared.warnings(),
        "quality": prepared.quality_summary(),
        "ids": frame[id_column].tolist() if id_column else None,
    }
    files.write_object(files.chunk_output(chunk), output)
    return len(frame)


def _merge_quality(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> None:
    for feature, counts in part.items():
        into = total.setdefault(feature, {})
        for kind, count in counts.items():
            into[kind] = into.get(kind, 0) + count


def write_results(files: JobFiles, chunks: int, model: LoadedModel, job_id: str, id_column: str | None) -> dict:
    """Join chunk outputs into result.json and result.csv; return the data-quality summary.

    One pass reads each chunk once: its rows go to the CSV, each JSON array to its own scratch
    file; result.json is then joined from those. Both are stored once complete, the chunks removed.
    """
    quality: dict[str, dict[str, int]] = {}
    with_probabilities = has_probabilities(model)
    keys = ["predictions"] + (["probabilities"] if with_probabilities else []) + ["warnings"]
    keys += ["ids"] if id_column else []
    with tempfile.TemporaryDirectory(dir=files.create().dir, prefix=".join-") as scratch_dir:
        scratch = Path(scratch_dir)
        with contextlib.ExitStack() as stack:
            csv_out = stack.enter_context(open(scratch / files.result_csv.name, "w", newline=""))
            arrays = {key: stack.enter_context(open(scratch / f"{key}.part", "w")) for key in keys}
            started = dict.fromkeys(keys, False)
            for chunk in range(chunks):
                frame = files.read_object(files.chunk_input(chunk))
                output = files.read_object(files.chunk_output(chunk))
                _merge_quality(quality, output["quality"])
                for key in keys:
                    if output[key]:
                        # One dumps per chunk, not per row: the join is I/O, not a Python loop.
                        arrays[key].write((", " if started[key] else "") + json.dumps(output[key])[1:-1])
                        started[key] = True
                frame[PREDICTION_COLUMN] = output["predictions"]
                for label in model.classes if with_probabilities else []:
                    frame[f"{PROBABILITY_PREFIX}{label}"] = [p[str(label)] for p in output["probabilities"]]
                frame.to_csv(csv_out, header=chunk == 0, index=False)

        with open(scratch / files.result_json.name, "w") as out:
            out.write(json.dumps({"job_id": job_id, "model_version": model.version})[:-1])
            for key in keys:
                out.write(f', "{key}": [')
                with open(scratch / f"{key}.part") as part:
                    shutil.copyfileobj(part, out, COPY_BLOCK_BYTES)
                out.write("]")
            out.write("}")
        files.store(scratch / files.result_csv.name, files.result_csv)
        files.store(scratch / files.result_json.name, files.result_json)
    return quality


def remove_chunks(files: JobFiles) -> None:
    """Delete a job's chunk files, once its result is stored and the job marked succeeded."""
    files.storage.delete_prefix(files.key(files.chunks_dir))
    files.drop_empty_scratch()

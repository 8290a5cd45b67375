"""Batch scoring on files: job input in, chunks scored apart, one result out.

Messages carry only a job id and a chunk number; rows travel through the job's files, kept
in the storage API and workers share (the data directory, or an object store), so any
worker on any host can take any step. Every file is plain data (CSV, JSON, Arrow IPC):
reading one runs no code.

A job's files, under ``jobs/<id>/``:

- ``input.csv`` or ``input.json``: the rows as submitted. ``input.json`` is a JSON array
  written one row per line, so it can be read row by row.
- ``chunks/<n>.in.arrow``: rows ``n * chunk_rows`` onwards, as an Arrow IPC file. CSV
  values stay text, so an id "007" is never the number 7; JSON values keep their JSON type.
- ``chunks/<n>.out.arrow``: what scoring chunk ``n`` gave, ready to be joined: its lines
  of ``result.csv``, the inner text of each ``result.json`` array, its data-quality counts.
- ``result.csv`` and ``result.json``: the chunk outputs joined byte for byte, in order.

Memory is bounded by the chunk size, whatever the size of the input: splitting holds one
chunk of rows plus one CSV block (``CSV_BLOCK_BYTES``); scoring holds one chunk's rows, its
features as arrays and its outputs, each a small multiple of the chunk's text; finalising
holds one chunk's output and a copy buffer. No step holds a Python object per row of the
whole job. A worker process thus needs its model, Arrow's and the scorer's libraries, and a
few times one chunk's text: measured with 10,000-row chunks of 11 columns, a pool process
peaked at 325-337 MiB for a 1,000,000-row CSV and at 328 MiB for 10,000,000 rows (an idle
worker with its model loaded: about 260 MiB).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.ipc as ipc
from threadpoolctl import threadpool_limits

from shared.errors import BadRequest, FieldError, InvalidInput, PayloadTooLarge
from shared.inputs import check_columns
from shared.schema import FeatureSchema
from shared.serving import Scored, score_columns
from shared.settings import DEFAULT_MAX_CSV_COLUMNS, DEFAULT_MAX_CSV_HEADER_BYTES, MAX_CSV_LINE_BYTES
from shared.storage import LocalStorage, Storage
from shared.store import LoadedModel

COPY_BLOCK_BYTES = 1 << 20
SNIFF_BYTES = 64 * 1024
# The CSV reader parses blocks of this size, one at a time: no row (nor the header) may be
# longer. Larger blocks read no faster here and cost the worker more memory per block.
CSV_BLOCK_BYTES = MAX_CSV_LINE_BYTES
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
JOBS_PREFIX = "jobs"
# What shared.jobs.new_job_id makes (uuid4 hex): nothing else may become part of a path.
JOB_ID = re.compile(r"[0-9a-f]{32}")
# pandas' default missing-value markers: a CSV value reads as missing exactly when it did
# while jobs were read with pandas.
MISSING_MARKERS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
# The words pandas reads as booleans.
TRUE_WORDS = ("True", "TRUE", "true")
FALSE_WORDS = ("False", "FALSE", "false")
# Field metadata of a chunk column: values as read from a CSV file (text, to be typed as pandas
# types them), or a JSON input column whose values differ in type (each value its JSON text).
CSV_TEXT = {b"predictq.values": b"csv"}
JSON_VALUES = {b"predictq.values": b"json"}
# Arrow type of a JSON input column whose values (besides null) all have one Python type.
JSON_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.large_string(), bool: pa.bool_()}
# The arrays of result.json after job_id and model_version, in this order when present.
RESULT_ARRAYS = ("predictions", "probabilities", "warnings", "ids")
QUOTE_NEEDED = r'[",\r\n]'
QUOTED_CHARACTERS = (b",", b'"', b"\r", b"\n")
# Values of a text column tried as numbers before the whole column is.
NUMBER_PROBE_VALUES = 64
MAX_PARSER_MESSAGE = 300


def is_job_id(value: object) -> bool:
    """Whether ``value`` is a job id as predictq makes them."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


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
        The job; anything but a job id as ``shared.jobs.new_job_id`` makes them is refused
        (ValueError) before it is made part of a path.
    storage : Storage or None
        Where the files are shared. None keeps them in ``jobs_dir`` itself.
    """

    def __init__(self, jobs_dir: Path, job_id: str, storage: Storage | None = None):
        if not is_job_id(job_id):
            # An id read from Redis or a message is not trusted: "../models" would name the models.
            raise ValueError(f"{str(job_id)[:40]!r} is not a job id")
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
        return self.chunks_dir / f"{chunk:05d}.in.arrow"

    def chunk_output(self, chunk: int) -> Path:
        return self.chunks_dir / f"{chunk:05d}.out.arrow"

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

    def write_table(self, path: Path, table: pa.Table) -> None:
        """Store ``table`` as an Arrow IPC file."""
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.storage.write_bytes(self.key(path), sink.getvalue().to_pybytes())

    def read_table(self, path: Path) -> pa.Table:
        """A table stored by ``write_table``; its columns point into the bytes read, uncopied."""
        return ipc.open_file(pa.py_buffer(self.storage.read_bytes(self.key(path)))).read_all()

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


# --- submission ----------------------------------------------------------------------------


def result_columns(model: LoadedModel) -> list[str]:
    """The columns result.csv adds after the input's: ``prediction``, then one per class."""
    return [PREDICTION_COLUMN, *(f"{PROBABILITY_PREFIX}{label}" for label in model.classes or [])]


def check_result_columns(columns: Iterable[str], reserved: Collection[str]) -> None:
    """Refuse an input column that result.csv would overwrite with its own of that name."""
    present = set(columns)
    clash = [name for name in reserved if name in present]
    if clash:
        raise InvalidInput(
            f"The input has {len(clash)} column(s) that the result adds itself: {clash}; rename them",
            [FieldError("the result has its own column of this name; rename the input column", field=n) for n in clash],
        )


def write_json_input(
    files: JobFiles, instances: list[dict], *, result_columns: Collection[str] = (PREDICTION_COLUMN,)
) -> None:
    """Store JSON rows as the job's input: a JSON array, one row per line.

    ``result_columns`` (see :func:`result_columns`) are refused as keys of a row.
    """
    check_result_columns(_row_keys(instances), result_columns)
    body = b"[\n" + b",\n".join(_row_json(row) for row in instances) + b"\n]\n"
    files.storage.write_bytes(files.key(files.input_json), body)


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


def validate_csv(
    path: Path,
    schema: FeatureSchema | None,
    id_column: str | None = None,
    *,
    result_columns: Collection[str] = (PREDICTION_COLUMN,),
    max_header_bytes: int = DEFAULT_MAX_CSV_HEADER_BYTES,
    max_columns: int = DEFAULT_MAX_CSV_COLUMNS,
) -> list[str]:
    """Fail fast on an upload that cannot become a job; return its header.

    Refused: anything not UTF-8 CSV text, an empty table, a first line longer than
    ``max_header_bytes`` or with more than ``max_columns`` columns (checked before any
    parser sees the file), a column named twice, and, with a ``schema``, a missing feature
    column, an ``id_column`` not in the header, or one of ``result_columns``. ``schema``
    None checks only that it is a non-empty CSV table (training uploads).
    """
    with open(path, "rb") as handle:
        head = handle.read(max(SNIFF_BYTES, max_header_bytes + 1))
    _check_text(head)
    _check_header_size(head, max_header_bytes, max_columns)
    with open(path, "rb") as handle, _csv_errors("The upload"):
        reader = _csv_reader(handle)
        columns = reader.schema.names
        if not any(part.num_rows for part in _first_batches(reader)):
            raise BadRequest("The uploaded CSV has a header but no rows")
    _check_unique(columns)
    if schema is not None:
        check_columns(columns, schema)
        check_result_columns(columns, result_columns)
    if id_column is not None and id_column not in columns:
        raise InvalidInput(
            f"id_column {id_column!r} is not a column of the upload",
            [FieldError("id_column not in the CSV header", field=id_column)],
        )
    return columns


def _check_text(head: bytes) -> None:
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


def _check_header_size(head: bytes, max_header_bytes: int, max_columns: int) -> None:
    """Refuse a huge header from its bytes alone: a parser would spend memory on every column."""
    end = head.find(b"\n")
    first_line = head if end == -1 else head[:end]
    if len(first_line) > max_header_bytes:
        raise BadRequest(
            f"The CSV header (its first line) is longer than {max_header_bytes} bytes (PREDICTQ_MAX_CSV_HEADER_BYTES)"
        )
    count = len(next(csv.reader([first_line.decode("utf-8", errors="replace")]), []))
    if count > max_columns:
        raise BadRequest(
            f"The CSV header has {count} columns; at most {max_columns} are accepted (PREDICTQ_MAX_CSV_COLUMNS)"
        )


def _check_unique(columns: list[str]) -> None:
    repeated = [name for name, count in Counter(columns).items() if count > 1]
    if repeated:
        raise InvalidInput(
            f"The CSV header names {len(repeated)} column(s) more than once: {repeated}",
            [FieldError("column named more than once in the header", field=name) for name in repeated],
        )


# --- reading inputs ------------------------------------------------------------------------


@contextlib.contextmanager
def _csv_errors(what: str) -> Iterator[None]:
    """A parser error is the user's file, not ours: a BadRequest naming the fault."""
    try:
        yield
    except pa.ArrowInvalid as exc:
        message = str(exc).strip()
        if "straddl" in message:  # Arrow's words for a row longer than its block
            message = f"a row (or the header) is longer than {CSV_BLOCK_BYTES} bytes"
        if len(message) > MAX_PARSER_MESSAGE:
            message = message[:MAX_PARSER_MESSAGE] + "..."
        raise BadRequest(f"{what} cannot be read as CSV: {message}") from exc


def _csv_reader(handle: BinaryIO, text_columns: list[str] | None = None) -> pcsv.CSVStreamingReader:
    """Arrow's streaming CSV reader, missing values as pandas reads them.

    ``text_columns`` are read as text; without them Arrow infers types (enough for a header).
    """
    convert = pcsv.ConvertOptions(
        column_types=dict.fromkeys(text_columns, pa.large_string()) if text_columns else None,
        null_values=list(MISSING_MARKERS),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    # One thread: parallelism comes from worker processes, and one thread reads faster here
    # than several contending with them (and reads no blocks ahead, which bounds memory).
    read = pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False)
    return pcsv.open_csv(handle, read_options=read, convert_options=convert)


def _first_batches(reader: pcsv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
    """Batches up to the first holding a row (Arrow may give empty ones first)."""
    for batch in reader:
        yield batch
        if batch.num_rows:
            return


def _csv_chunks(files: JobFiles, chunk_rows: int) -> tuple[list[str], Iterator[pa.Table]]:
    """The header, and the rows as tables of ``chunk_rows`` rows, every value as text."""
    with files.open(files.input_csv) as handle, _csv_errors("The job's input"):
        columns = _csv_reader(handle).schema.names  # the header, read as the rows will be

    def chunks() -> Iterator[pa.Table]:
        with files.open(files.input_csv) as handle, _csv_errors("The job's input"):
            reader = _csv_reader(handle, columns)
            marked = pa.schema([field.with_metadata(CSV_TEXT) for field in reader.schema])
            for table in _rechunk(reader, reader.schema, chunk_rows):
                yield pa.Table.from_arrays(table.columns, schema=marked)

    return columns, chunks()


def _rechunk(batches: Iterable[pa.RecordBatch], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last one shorter) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, schema)


def _json_chunks(files: JobFiles, chunk_rows: int) -> tuple[list[str], Iterator[pa.Table]]:
    """The columns (every key of any row, in first-seen order), and the rows as tables."""
    # One column list for every chunk: the CSV result has a single header.
    columns = _row_keys(_json_rows(files))

    def chunks() -> Iterator[pa.Table]:
        part: list[dict] = []
        for row in _json_rows(files):
            part.append(row)
            if len(part) == chunk_rows:
                yield _json_table(part, columns)
                part = []
        if part:
            yield _json_table(part, columns)

    return columns, chunks()


def _json_rows(files: JobFiles) -> Iterator[dict]:
    """The rows of input.json, read one line at a time."""
    with files.open(files.input_json) as handle:
        first = handle.readline()
        if first.strip() != b"[":  # written on one line, by an earlier version
            yield from _load_json(first + handle.read())
            return
        for line in handle:
            line = line.rstrip(b"\r\n").removesuffix(b",")
            if line and line != b"]":
                yield _load_json(line)


def _json_table(rows: list[dict], columns: list[str]) -> pa.Table:
    """Rows as columns: typed where a column's values share a type, JSON text where they do not."""
    arrays, fields = [], []
    for name in columns:
        values = [row.get(name) for row in rows]
        array = _typed_array(values)
        metadata = None
        if array is None:
            array = pa.array([None if v is None else _json_text(v) for v in values], pa.large_string())
            metadata = JSON_VALUES
        arrays.append(array)
        fields.append(pa.field(name, array.type, metadata=metadata))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _typed_array(values: list) -> pa.Array | None:
    """The values as one Arrow type, or None when no type keeps them exactly (3 and 3.0, 2**70)."""
    kinds = {type(value) for value in values if value is not None}
    if not kinds:
        return pa.nulls(len(values), pa.large_string())
    if len(kinds) > 1 or (kind := kinds.pop()) not in JSON_ARROW_TYPES:
        return None
    try:
        return pa.array(values, JSON_ARROW_TYPES[kind])
    except (OverflowError, pa.ArrowException):
        return None


def _row_keys(rows: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))


def _row_json(row: Any) -> bytes:
    """One row's JSON text; never holds a newline, so input.json keeps one row per line."""
    try:
        return orjson.dumps(row)
    except TypeError:  # beyond orjson: integers over 64 bits
        return json.dumps(row).encode()


def _json_text(value: Any) -> str:
    return _row_json(value).decode()


def _load_json(text: bytes | str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # beyond orjson: integers over 64 bits, NaN
        return json.loads(text)


def split_input(
    files: JobFiles, chunk_rows: int, id_column: str | None = None, *, result_columns: Collection[str] = ()
) -> tuple[int, int]:
    """Cut the job's input into chunk files; return (rows, chunks).

    Chunks are numbered from 0 and hold ``chunk_rows`` rows each (the last one fewer), the
    same for the same input, so a split run again rewrites the same bytes (atomically: a
    reader sees the old file or the new one). ``result_columns`` are refused as input
    columns (see :func:`check_result_columns`). ``id_column`` is accepted for symmetry with
    the other steps: CSV values stay text anyway.
    """
    if files.exists(files.input_json):
        columns, chunks = _json_chunks(files, chunk_rows)
    else:
        columns, chunks = _csv_chunks(files, chunk_rows)
    check_result_columns(columns, result_columns)
    rows = count = 0
    for count, table in enumerate(chunks, start=1):
        files.write_table(files.chunk_input(count - 1), table)
        rows += table.num_rows
    if rows == 0:
        raise BadRequest("The job's input has no rows")
    return rows, count


# --- scoring a chunk -----------------------------------------------------------------------


def score_chunk(files: JobFiles, chunk: int, model: LoadedModel, chunk_rows: int, id_column: str | None) -> int:
    """Score one chunk file and write its output; return its row count. Idempotent.

    The output holds the chunk's lines of result.csv (chunk 0's with the header first), the
    inner text of each result.json array, and the chunk's data-quality counts.
    """
    table = files.read_table(files.chunk_input(chunk))
    # Chunks are scored side by side in worker processes: BLAS and OpenMP threads inside each
    # would only contend for the same cores (measured: one thread per process is faster).
    with threadpool_limits(limits=1):
        scored = score_columns(model, scoring_frame(table, model.schema), row_offset=chunk * chunk_rows)
    # One text per probability column, for both result files: the same digits in each.
    probabilities = _probability_texts(scored)
    parts = {
        "rows": table.num_rows,
        "quality": orjson.dumps(scored.prepared.quality_summary()),
        "csv": _csv_part(table, scored, probabilities, header=chunk == 0),
        "predictions": _json_array_text(_json_ready(scored.predictions)),
    }
    if scored.probabilities is not None:
        parts["probabilities"] = _probability_objects(scored, probabilities)
    parts["warnings"] = _json_array_text(scored.prepared.warnings())
    if id_column:
        parts["ids"] = _json_array_text(_values(table.column(id_column), table.schema.field(id_column)))
    files.write_table(files.chunk_output(chunk), _one_row(parts))
    return table.num_rows


def scoring_frame(table: pa.Table, schema: FeatureSchema) -> pd.DataFrame:
    """The chunk's feature columns, typed as ``pd.read_csv`` of this chunk typed them.

    A text column whose every value reads as a number becomes float64 (pandas: int64 or
    float64, the same numbers), one of only true/false words becomes booleans, any other
    stays text: coercion then treats a value exactly as it did when chunks were pandas'.
    Features absent from the table are left out, for coercion to report.
    """
    columns = {}
    for name in schema.names:
        if name in table.column_names:
            values = _parsed(table.column(name).combine_chunks(), table.schema.field(name))
            columns[name] = pd.Series(values, dtype=values.dtype, copy=False)
    return pd.DataFrame(columns, copy=False)


def _parsed(column: pa.Array, field: pa.Field) -> np.ndarray:
    if field.metadata == JSON_VALUES:
        return _object_array(_values(column, field))
    if field.metadata != CSV_TEXT:
        return column.to_numpy(zero_copy_only=False)  # JSON input: typed already
    numbers = _numbers(column)
    if numbers is not None:
        return numbers.to_numpy(zero_copy_only=False)
    if _all_in(column, TRUE_WORDS + FALSE_WORDS):
        truth = pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), pc.is_in(column, pa.array(TRUE_WORDS)))
        return truth.to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False)


def _numbers(column: pa.Array) -> pa.Array | None:
    """The column as float64 if every value reads as a number, as pandas would read it; else None.

    pandas ignores spaces around a number (" 5" is 5). A few values are tried first: a failed
    cast of a whole text column costs more than the cast of a number column.
    """
    probe = pc.ascii_trim_whitespace(pc.drop_null(column.slice(0, NUMBER_PROBE_VALUES)))
    if _cast_numbers(probe) is None:
        return None
    numbers = _cast_numbers(column)
    return numbers if numbers is not None else _cast_numbers(pc.ascii_trim_whitespace(column))


def _cast_numbers(column: pa.Array) -> pa.Array | None:
    try:
        return pc.cast(column, pa.float64())
    except pa.ArrowInvalid:
        return None


def _all_in(column: pa.Array, words: tuple[str, ...]) -> bool:
    """Whether every value of the column (missing ones aside) is one of ``words``."""
    return bool(pc.all(pc.or_(pc.is_in(column, pa.array(words)), pc.is_null(column))).as_py())


def _values(column: pa.ChunkedArray | pa.Array, field: pa.Field) -> list:
    """A column's values as Python objects (JSON text decoded): what result.json shows."""
    values = column.to_pylist()
    if field.metadata == JSON_VALUES:
        return [None if value is None else _load_json(value) for value in values]
    return values


def _object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _json_ready(predictions: np.ndarray) -> np.ndarray | list:
    """Predictions orjson can write: numeric arrays as they are, labels as a list."""
    if predictions.dtype.kind in "biuf":
        return np.ascontiguousarray(predictions)
    return predictions.tolist()


def _json_array_text(values: np.ndarray | list) -> bytes:
    """The JSON text of an array without its brackets, ready to be joined with other chunks'."""
    return orjson.dumps(values, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _one_row(parts: dict[str, Any]) -> pa.Table:
    arrays = {
        name: pa.array([value], pa.int64() if isinstance(value, int) else pa.large_binary())
        for name, value in parts.items()
    }
    return pa.table(arrays)


# --- writing result text, column by column -------------------------------------------------


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def _csv_part(table: pa.Table, scored: Scored, probabilities: list[pa.Array], *, header: bool) -> bytes:
    """The chunk's lines of result.csv: its input columns as read, then prediction and probabilities.

    Written column by column in Arrow (no Python object per row), quoted as pandas quotes:
    only values holding a comma, a quote or a line break; a missing value is empty.
    """
    names = [*table.column_names, PREDICTION_COLUMN]
    columns = range(table.num_columns)
    fields = [_csv_field(table.column(i).combine_chunks(), table.schema.field(i).metadata) for i in columns]
    fields.append(_csv_field(pa.array(scored.predictions)))
    names += [f"{PROBABILITY_PREFIX}{label}" for label in scored.class_names]
    fields += probabilities
    # The line break rides on the last field, so the lines' bytes are the part as they lie.
    fields[-1] = pc.binary_join_element_wise(fields[-1], _text("\n"), _text(""), null_handling="replace")
    lines = pc.binary_join_element_wise(*fields, _text(","), null_handling="replace", null_replacement="")
    body = _concatenated(lines)
    return _csv_header(names) + body if header else body


def _csv_header(names: list[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(names)
    return text.getvalue().encode()


def _csv_field(column: pa.Array, metadata: dict | None = None) -> pa.Array:
    """One column as CSV text."""
    if metadata == JSON_VALUES:
        # Mixed JSON values written as Python prints them, as pandas wrote them.
        values = [None if value is None else str(_load_json(value)) for value in column.to_pylist()]
        column = pa.array(values, pa.large_string())
    kind = column.type
    if pa.types.is_floating(kind):
        return _float_text(column, missing="")
    if pa.types.is_boolean(kind):
        return pc.if_else(column, _text("True"), _text("False"))
    return _quoted(pc.cast(column, pa.large_string()))


def _quoted(text: pa.Array) -> pa.Array:
    data = text.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    if not any(character in raw for character in QUOTED_CHARACTERS):  # a scan of the bytes, not per value
        return text
    needs = pc.match_substring_regex(text, QUOTE_NEEDED)
    escaped = pc.binary_join_element_wise(_text('"'), pc.replace_substring(text, '"', '""'), _text('"'), _text(""))
    return pc.if_else(needs, escaped, text)


def _float_text(values: pa.Array, *, missing: str | None = None) -> pa.Array:
    """Shortest text that reads back as the same double, with ".0" on whole numbers as Python writes.

    ``missing`` replaces NaN (pandas writes NaN as an empty field).
    """
    values = pc.cast(values, pa.float64())  # a float32's shortest text is not its double's
    text = pc.cast(values, pa.large_string())
    whole = pc.and_(pc.is_finite(values), pc.equal(pc.floor(values), values))
    if pc.any(whole).as_py():
        whole = pc.and_(whole, pc.invert(pc.match_substring(text, "e")))  # 1e+16 stays as it is
        text = pc.if_else(whole, pc.binary_join_element_wise(text, _text(".0"), _text("")), text)
    if missing is not None and pc.any(pc.is_nan(values)).as_py():
        text = pc.if_else(pc.is_nan(values), _text(missing), text)
    return text


def _probability_texts(scored: Scored) -> list[pa.Array]:
    if scored.probabilities is None:
        return []
    return [_float_text(pa.array(scored.probabilities[:, position])) for position in range(len(scored.class_names))]


def _probability_objects(scored: Scored, texts: list[pa.Array]) -> bytes:
    """The inner text of result.json's ``probabilities``: ``{"<class>": p, ...}`` per row, built by column."""
    if not np.isfinite(scored.probabilities).all():  # JSON has no NaN: orjson writes null
        rows = [dict(zip(scored.class_names, row, strict=True)) for row in scored.probabilities.tolist()]
        return _json_array_text(rows)
    pieces: list[pa.Array | pa.Scalar] = []
    for position, (name, text) in enumerate(zip(scored.class_names, texts, strict=True)):
        opening = "{" if position == 0 else ","
        pieces += [_text(f"{opening}{orjson.dumps(name).decode()}:"), text]
    pieces.append(_text("},"))
    return _concatenated(pc.binary_join_element_wise(*pieces, _text("")))[:-1]  # no comma after the last


def _concatenated(strings: pa.Array) -> bytes:
    """Every string of the array back to back: the bytes of its data buffer, no string per row."""
    if len(strings) == 0:
        return b""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + len(strings) + 1]
    return memoryview(strings.buffers()[2])[offsets[0] : offsets[-1]].tobytes()


# --- joining the results -------------------------------------------------------------------


class _ArrayPart:
    """One result.json array being joined in a scratch file: chunks' texts, commas between."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.started = False

    def append(self, text: pa.Buffer) -> None:
        if not text.size:
            return
        if self.started:
            self.handle.write(b",")
        self.handle.write(text)
        self.started = True


def _merge_quality(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> None:
    for feature, counts in part.items():
        into = total.setdefault(feature, {})
        for kind, count in counts.items():
            into[kind] = into.get(kind, 0) + count


def write_results(files: JobFiles, chunks: int, model: LoadedModel, job_id: str, id_column: str | None) -> dict:
    """Join chunk outputs into result.json and result.csv; return the data-quality summary.

    One pass reads each chunk output once: its CSV lines are appended to result.csv, each of
    its JSON array texts to a scratch file per array; result.json is then those files copied
    between its keys. Bytes only: no row is parsed. Both are stored once complete.
    ``id_column`` is kept for symmetry with the other steps: chunks carry their ids.
    """
    quality: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(dir=files.create().dir, prefix=".join-") as scratch_dir:
        scratch = Path(scratch_dir)
        with contextlib.ExitStack() as stack:
            csv_out = stack.enter_context(open(scratch / files.result_csv.name, "wb"))
            arrays: dict[str, _ArrayPart] = {}
            for chunk in range(chunks):
                output = files.read_table(files.chunk_output(chunk))
                _merge_quality(quality, orjson.loads(output["quality"][0].as_py()))
                csv_out.write(output["csv"][0].as_buffer())
                for key in (key for key in RESULT_ARRAYS if key in output.column_names):
                    if key not in arrays:
                        arrays[key] = _ArrayPart(stack.enter_context(open(scratch / f"{key}.part", "wb")))
                    arrays[key].append(output[key][0].as_buffer())
        present = [key for key in RESULT_ARRAYS if key in arrays]
        _write_result_json(scratch, scratch / files.result_json.name, job_id, model.version, present)
        files.store(scratch / files.result_csv.name, files.result_csv)
        files.store(scratch / files.result_json.name, files.result_json)
    return quality


def _write_result_json(scratch: Path, path: Path, job_id: str, version: str, keys: list[str]) -> None:
    with open(path, "wb") as out:
        out.write(orjson.dumps({"job_id": job_id, "model_version": version})[:-1])
        for key in keys:
            out.write(b',"' + key.encode() + b'":[')
            with open(scratch / f"{key}.part", "rb") as part:
                shutil.copyfileobj(part, out, COPY_BLOCK_BYTES)
            out.write(b"]")
        out.write(b"}")


def remove_chunks(files: JobFiles) -> None:
    """Delete a job's chunk files, once its result is stored and the job marked succeeded."""
    files.storage.delete_prefix(files.key(files.chunks_dir))
    files.drop_empty_scratch()

"""Reading the tables users point predictq at: CSV or Parquet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from shared.errors import TrainingError

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: Path) -> pd.DataFrame:
    """Load a CSV or Parquet file, choosing the reader by suffix."""
    path = Path(path)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise TrainingError(f"{path}: expected a .csv or .parquet file")
    if not path.is_file():
        raise TrainingError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise TrainingError(f"{path}: cannot be read as {kind}: {exc}") from exc
    if frame.empty:
        raise TrainingError(f"{path}: the table has no rows")
    return frame


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()

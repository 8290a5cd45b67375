"""The seeded synthetic table every figure is measured on, and request bodies drawn from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv

NUMERIC_COLUMNS = tuple(f"num_{i}" for i in range(8))
# Level counts differ so the one-hot encoder has narrow and wide columns to build.
CATEGORICAL_LEVELS = {"cat_a": 3, "cat_b": 6, "cat_c": 12}
CATEGORICAL_COLUMNS = tuple(CATEGORICAL_LEVELS)
FEATURE_COLUMNS = NUMERIC_COLUMNS + CATEGORICAL_COLUMNS
TARGET = "outcome"
TRAINING_ROWS = 20_000
SEED = 20261203
MISSING_SHARE = 0.05
# Numeric columns on very different scales, as real tables have, so scaling matters.
NUMERIC_SCALES = (1.0, 10.0, 0.1, 100.0, 1.0, 5.0, 1000.0, 0.01)
NUMERIC_OFFSETS = (0.0, 50.0, 1.0, -200.0, 3.0, 0.0, 5000.0, 0.5)


def synthetic_table(rows: int = TRAINING_ROWS, seed: int = SEED, *, with_target: bool = True) -> pd.DataFrame:
    """A table of 8 numeric and 3 categorical features, each missing in about 5 % of rows.

    Parameters
    ----------
    rows : int
        Number of rows.
    seed : int
        The same seed gives the same table, value for value.
    with_target : bool
        Include the binary ``outcome`` column (0 or 1).

    Returns
    -------
    DataFrame
        Numeric columns as float64 (NaN when missing), categorical columns as strings
        (None when missing), then ``outcome``. The outcome depends on the features before
        values go missing: linearly on most of them, through one interaction, and on every
        categorical column, so a model has something to learn.
    """
    rng = np.random.default_rng(seed)
    standard = rng.standard_normal((rows, len(NUMERIC_COLUMNS)))
    codes = {name: rng.integers(0, levels, rows) for name, levels in CATEGORICAL_LEVELS.items()}
    weights = np.array([1.2, -0.8, 0.6, 0.0, 0.5, -0.4, 0.3, 0.0])
    logit = standard @ weights + 0.7 * standard[:, 0] * standard[:, 3]
    for name, levels in CATEGORICAL_LEVELS.items():
        logit += np.linspace(-1.0, 1.0, levels)[codes[name]]
    outcome = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    columns: dict[str, object] = {}
    numeric = np.round(standard * NUMERIC_SCALES + NUMERIC_OFFSETS, 4)
    missing = rng.random((rows, len(FEATURE_COLUMNS))) < MISSING_SHARE
    for i, name in enumerate(NUMERIC_COLUMNS):
        columns[name] = np.where(missing[:, i], np.nan, numeric[:, i])
    for j, (name, levels) in enumerate(CATEGORICAL_LEVELS.items()):
        labels = np.array([f"{name}_{k}" for k in range(levels)], dtype=object)[codes[name]]
        labels[missing[:, len(NUMERIC_COLUMNS) + j]] = None
        columns[name] = labels
    if with_target:
        columns[TARGET] = outcome
    return pd.DataFrame(columns)


def instances(frame: pd.DataFrame) -> list[dict]:
    """The rows of ``frame`` as JSON objects, missing values as None (JSON null)."""
    features = frame[list(FEATURE_COLUMNS)]
    return features.astype(object).where(features.notna(), None).to_dict("records")


def request_rows(table: pd.DataFrame, count: int, seed: int = SEED) -> list[dict]:
    """``count`` rows drawn from ``table`` without replacement, always the same for a seed.

    A one-row request gets a row with one missing numeric and one missing categorical
    value, so every server's imputation (and predictq's warnings) is on the measured path.
    """
    if count == 1:
        gaps = table[list(NUMERIC_COLUMNS)].isna().any(axis=1) & table[list(CATEGORICAL_COLUMNS)].isna().any(axis=1)
        return instances(table[gaps].head(1))
    picked = np.random.default_rng(seed).choice(len(table), size=count, replace=False)
    return instances(table.iloc[np.sort(picked)])


def write_body(rows: list[dict], path: Path) -> Path:
    """Write ``{"instances": rows}`` to ``path``: the body every server is sent."""
    path.write_text(json.dumps({"instances": rows}))
    return path


def write_batch_csv(path: Path, rows: int, block_rows: int = 1_000_000) -> Path:
    """A features-only CSV of ``rows`` rows, written in blocks so memory stays bounded.

    Block ``i`` is the synthetic table for seed ``SEED + 1 + i``: rows a model never saw.
    """
    # pyarrow writes a block about four times faster than DataFrame.to_csv. The values hold no
    # commas or quotes, so they go unquoted, header included, as pandas would write them.
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with path.open("wb") as handle:
        handle.write((",".join(FEATURE_COLUMNS) + "\n").encode())
        for block, start in enumerate(range(0, rows, block_rows)):
            frame = synthetic_table(min(block_rows, rows - start), SEED + 1 + block, with_target=False)
            pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), handle, write_options=options)
    return path

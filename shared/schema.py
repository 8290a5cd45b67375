"""What a model expects: its features, their kinds, and what training saw of each."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from shared.errors import TrainingError

FeatureKind = Literal["numeric", "categorical"]
ValueType = Literal["integer", "float", "boolean", "string"]

# A text column with more distinct values than this share of its rows looks like an
# identifier (names, ids, free text): one-hot encoding it would only memorise rows.
IDENTIFIER_UNIQUE_SHARE = 0.5
IDENTIFIER_MIN_UNIQUE = 50
HISTOGRAM_BINS = 20
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class Feature:
    """One input column of a model, with the statistics of its training values."""

    name: str
    kind: FeatureKind
    value_type: ValueType
    stats: dict = field(default_factory=dict)

    @property
    def training_min(self) -> float | None:
        return self.stats.get("min")

    @property
    def training_max(self) -> float | None:
        return self.stats.get("max")

    @cached_property
    def levels(self) -> frozenset[str]:
        """Built once per feature: it is looked up for every categorical value scored."""
        return frozenset(self.stats.get("levels", {}))


@dataclass(frozen=True)
class FeatureSchema:
    """The features a model takes, in order, plus the columns it ignores."""

    features: tuple[Feature, ...]
    ignored: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    def __getitem__(self, name: str) -> Feature:
        return self._by_name()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name()

    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    def with_stats(self, stats: dict[str, dict]) -> FeatureSchema:
        features = tuple(Feature(f.name, f.kind, f.value_type, stats[f.name]) for f in self.features)
        return FeatureSchema(features, self.ignored)

    def to_dict(self) -> dict:
        return {"features": [asdict(f) for f in self.features], "ignored": list(self.ignored)}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSchema:
        return cls(
            tuple(Feature(**f) for f in data["features"]),
            tuple(data.get("ignored", ())),
        )


def _value_type(column: pd.Series) -> ValueType:
    if ptypes.is_bool_dtype(column):
        return "boolean"
    if ptypes.is_integer_dtype(column):
        return "integer"
    if ptypes.is_float_dtype(column):
        non_null = column.dropna()
        if len(non_null) and np.all(np.mod(non_null, 1) == 0):
            # pandas reads an integer column with gaps as float.
            return "integer"
        return "float"
    return "string"


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    *,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    ignore: list[str] | None = None,
) -> FeatureSchema:
    """Decide which columns are numeric, categorical or ignored.

    Parameters
    ----------
    frame : DataFrame
        The training table, target column included.
    target : str
        The column to predict; never a feature.
    numeric, categorical, ignore : list of str, optional
        Overrides for the inferred kind of the named columns.

    Returns
    -------
    FeatureSchema
        Features without statistics; see :func:`compute_stats`.
    """
    numeric, categorical, ignore = set(numeric or ()), set(categorical or ()), set(ignore or ())
    unknown = (numeric | categorical | ignore) - set(frame.columns)
    if unknown:
        raise TrainingError(f"Columns named in the schema overrides are not in the data: {sorted(unknown)}")
    if target not in frame.columns:
        raise TrainingError(f"Target column {target!r} is not in the data; columns are {list(frame.columns)}")

    features: list[Feature] = []
    ignored: list[str] = []
    for name in frame.columns:
        if name == target:
            continue
        column = frame[name]
        if name in ignore or column.isna().all():
            ignored.append(name)
        elif name in numeric:
            if pd.to_numeric(column, errors="coerce").notna().sum() < column.notna().sum():
                raise TrainingError(f"Column {name!r} was declared numeric but holds non-numbers")
            features.append(Feature(name, "numeric", _value_type(pd.to_numeric(column))))
        elif name in categorical:
            features.append(Feature(name, "categorical", _value_type(column)))
        elif ptypes.is_bool_dtype(column):
            features.append(Feature(name, "categorical", "boolean"))
        elif ptypes.is_numeric_dtype(column):
            features.append(Feature(name, "numeric", _value_type(column)))
        elif ptypes.is_datetime64_any_dtype(column):
            ignored.append(name)
        else:
            distinct = column.nunique(dropna=True)
            looks_like_id = distinct > max(IDENTIFIER_MIN_UNIQUE, IDENTIFIER_UNIQUE_SHARE * column.notna().sum())
            if looks_like_id:
                ignored.append(name)
            else:
                features.append(Feature(name, "categorical", "string"))
    if not features:
        raise TrainingError("No usable feature columns: every column is the target or ignored")
    return FeatureSchema(tuple(features), tuple(ignored))


def _histogram(values: pd.Series) -> dict:
    """Training distribution for the model report: bin edges and counts."""
    if not len(values):
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(values.to_numpy(dtype=float), bins=HISTOGRAM_BINS)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def compute_stats(prepared: pd.DataFrame, schema: FeatureSchema, missing_marker: str) -> dict:
    """Per-feature statistics of prepared training rows, JSON-ready.

    Numeric: min, max, mean, std, quantiles and missing rate. Categorical: each level
    seen with its frequency (share of rows), and missing rate.
    """
    stats: dict[str, dict] = {}
    rows = max(len(prepared), 1)
    for feature in schema.features:
        column = prepared[feature.name]
        if feature.kind == "numeric":
            present = column.dropna()
            stats[feature.name] = {
                "min": float(present.min()) if len(present) else None,
                "max": float(present.max()) if len(present) else None,
                "mean": float(present.mean()) if len(present) else None,
                "std": float(present.std(ddof=0)) if len(present) else None,
                "quantiles": {f"p{round(q * 100):02d}": float(present.quantile(q)) for q in QUANTILES}
                if len(present)
                else {},
                "missing_rate": float(column.isna().sum() / rows),
                "histogram": _histogram(present),
            }
        else:
            missing = column == missing_marker
            counts = column[~missing].value_counts()
            stats[feature.name] = {
                "levels": {str(k): round(float(v / rows), 6) for k, v in counts.items()},
                "missing_rate": float(missing.sum() / rows),
            }
    return stats

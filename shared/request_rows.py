"""The path of small requests: JSON rows checked and encoded value by value in plain Python.

For a few rows numpy's per-call cost (about a microsecond per operation, dozens of
operations per feature) outweighs the arithmetic, and pandas' far more. Here each value is
coerced by the same functions as in :func:`shared.inputs.prepare`, its warning decided by the
same rules, and its design-matrix entry computed with the same float64 operations, so the
answer, the warnings and the errors are those of the vectorised path, bit for bit (a property
test feeds both the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from shared.inputs import (
    ABOVE_MAX,
    BELOW_MIN,
    MISSING,
    MISSING_CATEGORY,
    UNKNOWN_CATEGORY,
    FaultReport,
    Invalid,
    row_values,
    to_category,
    to_number,
    warning_entry,
)
from shared.schema import FeatureSchema


@dataclass
class PreparedRows:
    """Rows ready for the model as Python lists, and the warnings they raised, in row order.

    Offers what :class:`shared.inputs.PreparedInput` offers its callers (``rows``,
    ``columns``, ``original``, ``frame``, ``warnings()``, ``quality_summary()``).
    """

    values: dict[str, list]  # what the model sees, per feature
    sent: dict[str, list]  # numeric values as sent (before "clip")
    schema: FeatureSchema
    rows: int
    policy: str = "warn"
    flagged: list[tuple[int, str, str]] = field(default_factory=list)  # (row, feature, kind)
    row_offset: int = 0

    @cached_property
    def columns(self) -> dict[str, np.ndarray]:
        columns = {}
        for feature in self.schema.features:
            if feature.kind == "numeric":
                columns[feature.name] = np.array(self.values[feature.name], dtype=np.float64)
            else:
                column = np.empty(self.rows, dtype=object)
                column[:] = self.values[feature.name]
                columns[feature.name] = column
        return columns

    @cached_property
    def original(self) -> dict[str, np.ndarray]:
        return {name: np.array(values, dtype=np.float64) for name, values in self.sent.items()}

    @cached_property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({name: self.columns[name] for name in self.schema.names})

    def warnings(self) -> list[dict]:
        schema = self.schema
        return [self._warning(row, schema[name], kind) for row, name, kind in self.flagged]

    def quality_summary(self) -> dict[str, dict[str, int]]:
        summary: dict[str, dict[str, int]] = {}
        for _, name, kind in self.flagged:
            counts = summary.setdefault(name, {})
            counts[kind] = counts.get(kind, 0) + 1
        return summary

    def _warning(self, row: int, feature, kind: str) -> dict:
        values = self.sent if feature.kind == "numeric" else self.values
        return warning_entry(feature, kind, values[feature.name][row], row + self.row_offset, self.policy)


def prepare_small(
    instances: Any, schema: FeatureSchema, policy: str = "warn", *, allowed_extra: set[str] | None = None
) -> PreparedRows:
    """:func:`shared.inputs.prepare_rows` for a few rows, without numpy or pandas."""
    columns = row_values(instances, schema, allowed_extra)
    rows = len(instances)
    features = schema.features
    values: dict[str, list] = {}
    sent: dict[str, list] = {}
    for feature in features:
        coerce = to_number if feature.kind == "numeric" else (lambda v, f=feature: to_category(v, f))
        values[feature.name] = [coerce(v) for v in columns[feature.name]]
    faults = FaultReport()
    flagged: list[tuple[int, str, str]] = []
    reject = policy == "reject"
    for row in range(rows):
        for feature in features:
            name = feature.name
            value = values[name][row]
            if isinstance(value, Invalid):
                faults.add(value.reason, row=row, field=name)
                continue
            if feature.kind != "numeric":
                if value == MISSING_CATEGORY:
                    flagged.append((row, name, MISSING))
                elif value not in feature.levels:
                    flagged.append((row, name, UNKNOWN_CATEGORY))
                continue
            low, high = feature.training_min, feature.training_max
            if value != value:  # NaN: missing
                flagged.append((row, name, MISSING))
            elif low is not None and (value > high or value < low):
                kind = ABOVE_MAX if value > high else BELOW_MIN
                flagged.append((row, name, kind))
                if reject:
                    faults.add(
                        f"{value} is outside the training range [{low}, {high}] ({kind}); "
                        "this model rejects out-of-range values",
                        row=row,
                        field=name,
                    )
    if faults.count:
        faults.raise_any()
    for feature in features:
        if feature.kind == "numeric":
            column = values[feature.name]
            sent[feature.name] = column
            if policy == "clip" and feature.training_min is not None:
                low, high = feature.training_min, feature.training_max
                values[feature.name] = [v if v != v else min(max(v, low), high) for v in column]
    return PreparedRows(values, sent, schema, rows, policy, flagged)

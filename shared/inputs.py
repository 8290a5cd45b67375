"""Turn incoming rows into the frame a model was trained on, and report what does not fit.

The same coercion runs on training data and on every request, so a value means the same
thing at both times. Checks are vectorised: one pass per column whatever the row count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from shared.errors import BadRequest, FieldError, InvalidInput
from shared.schema import Feature, FeatureSchema

# skl2onnx cannot convert a categorical imputer whose missing marker is NaN, so a missing
# category becomes this string before the pipeline sees it.
MISSING_CATEGORY = "__missing__"

ABOVE_MAX = "above_training_max"
BELOW_MIN = "below_training_min"
UNKNOWN_CATEGORY = "unknown_category"
MISSING = "missing"
WARNING_KINDS = (ABOVE_MAX, BELOW_MIN, UNKNOWN_CATEGORY, MISSING)

# Beyond this many faults a 422 body lists the first ones and says how many there were.
MAX_REPORTED_ERRORS = 100

_TRUE_WORDS = {"true", "t", "yes", "1"}
_FALSE_WORDS = {"false", "f", "no", "0"}


class _Invalid:
    """Marks a value that cannot be coerced; carries the reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _to_number(value: Any) -> float | _Invalid:
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return _Invalid(f"expected a number, got boolean {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer with hundreds of digits
            return _Invalid("expected a finite number, got an integer too large for a float")
        if math.isinf(number):
            # NaN stays missing (pandas' own marker in an object column); infinity is never a value.
            return _Invalid(f"expected a finite number, got {number!r}")
        return number
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan
        try:
            number = float(text)
        except ValueError:
            return _Invalid(f"expected a number, got {value!r}")
        if not math.isfinite(number):
            return _Invalid(f"expected a finite number, got {value!r}")
        return number
    return _Invalid(f"expected a number, got {type(value).__name__}")


def _to_category(value: Any, feature: Feature) -> str | _Invalid:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_CATEGORY
    if feature.value_type == "boolean":
        if isinstance(value, (bool, np.bool_)):
            return str(bool(value))
        word = str(value).strip().lower()
        if word in _TRUE_WORDS:
            return "True"
        if word in _FALSE_WORDS:
            return "False"
        if not word:
            return MISSING_CATEGORY
        return _Invalid(f"expected true or false, got {value!r}")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return _Invalid(f"expected a category, got non-finite {value!r}")
        # 3 and 3.0 are the same level whether they came from JSON, CSV or a float column.
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str):
        return value if value.strip() else MISSING_CATEGORY
    return _Invalid(f"expected a category (string), got {type(value).__name__}")


def _coerce_column(column: pd.Series, feature: Feature) -> tuple[pd.Series, list[tuple[int, str]]]:
    """Return the coerced column and the (position, reason) of each value that failed."""
    if feature.kind == "numeric" and ptypes.is_numeric_dtype(column) and not ptypes.is_bool_dtype(column):
        values = column.astype("float64")
        infinite = np.flatnonzero(np.isinf(values.to_numpy()))
        return values, [(int(i), f"expected a finite number, got {float(values.iloc[i])!r}") for i in infinite]
    if feature.kind == "numeric":
        converted = [_to_number(v) for v in column.astype(object)]
    else:
        converted = [_to_category(v, feature) for v in column.astype(object)]
    faults = [(i, v.reason) for i, v in enumerate(converted) if isinstance(v, _Invalid)]
    if faults:
        filler = math.nan if feature.kind == "numeric" else MISSING_CATEGORY
        converted = [filler if isinstance(v, _Invalid) else v for v in converted]
    dtype = "float64" if feature.kind == "numeric" else object
    return pd.Series(converted, index=column.index, dtype=dtype), faults


@dataclass
class PreparedInput:
    """Rows ready for the pipeline, plus a mask per (feature, warning kind).

    ``original`` keeps numeric values as sent, so a clipped value is reported as it
    arrived rather than as the pipeline saw it.
    """

    frame: pd.DataFrame
    schema: FeatureSchema
    flags: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    original: dict[str, np.ndarray] = field(default_factory=dict)
    policy: str = "warn"
    row_offset: int = 0

    def warnings(self) -> list[dict]:
        """One entry per (row, feature) out of what training saw, rows in order."""
        found: list[tuple[int, int, dict]] = []
        order = {name: i for i, name in enumerate(self.schema.names)}
        for (name, kind), mask in self.flags.items():
            feature = self.schema[name]
            for row in np.flatnonzero(mask):
                found.append((int(row), order[name], self._warning(int(row), feature, kind)))
        found.sort(key=lambda item: (item[0], item[1]))
        return [w for _, _, w in found]

    def quality_summary(self) -> dict[str, dict[str, int]]:
        """Counts per feature and warning kind, for reports over a whole batch."""
        summary: dict[str, dict[str, int]] = {}
        for (name, kind), mask in self.flags.items():
            count = int(np.count_nonzero(mask))
            if count:
                summary.setdefault(name, {})[kind] = count
        return summary

    def _warning(self, row: int, feature: Feature, kind: str) -> dict:
        if feature.kind == "numeric":
            raw = self.original[feature.name][row]
            value = None if math.isnan(raw) else raw
        else:
            raw = self.frame[feature.name].iloc[row]
            value = None if raw == MISSING_CATEGORY else raw
        warning = {
            "row": row + self.row_offset,
            "feature": feature.name,
            "kind": kind,
            "value": value,
            "training_min": feature.training_min,
            "training_max": feature.training_max,
            "detail": _describe(feature, kind, value, self.policy),
        }
        return warning


def _describe(feature: Feature, kind: str, value: Any, policy: str) -> str:
    if kind == MISSING:
        if feature.kind == "numeric":
            return f"missing; imputed with the training median {feature.stats.get('quantiles', {}).get('p50')}"
        return "missing; imputed with the most frequent training category"
    if kind == UNKNOWN_CATEGORY:
        return f"category {value!r} was not seen in training; encoded as unknown (all levels off)"
    bound = feature.training_max if kind == ABOVE_MAX else feature.training_min
    side = "above the training maximum" if kind == ABOVE_MAX else "below the training minimum"
    action = f"clipped to {bound}" if policy == "clip" else "predicted as sent"
    return f"{value} is {side} {bound}; {action}"


def instances_to_frame(instances: Any, schema: FeatureSchema, *, allowed_extra: set[str] | None = None) -> pd.DataFrame:
    """Check the JSON shape of ``instances`` and build an object frame in feature order.

    Raises :class:`BadRequest` when the shape is wrong and :class:`InvalidInput` naming
    each row and field when a row lacks a feature, carries an unknown one, or holds a
    non-finite number.
    """
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list of objects, one per row")
    known = set(schema.names) | set(schema.ignored) | (allowed_extra or set())
    errors: list[FieldError] = []
    columns: dict[str, list] = {name: [] for name in schema.names}
    for row, instance in enumerate(instances):
        if not isinstance(instance, dict):
            errors.append(FieldError(f"row must be an object, got {type(instance).__name__}", row=row))
            continue
        for name in instance.keys() - known:
            errors.append(FieldError("unknown feature; the model does not take it", row=row, field=str(name)))
        for name in schema.names:
            if name not in instance:
                errors.append(
                    FieldError("missing required feature (send null for a missing value)", row=row, field=name)
                )
                continue
            value = instance[name]
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(FieldError(f"expected a finite number, got {value!r}", row=row, field=name))
            columns[name].append(value)
    if errors:
        raise _invalid(errors)
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})


def check_columns(columns: list[str], schema: FeatureSchema) -> None:
    """Refuse a table (CSV upload) that lacks a feature column the model needs."""
    missing = [name for name in schema.names if name not in columns]
    if missing:
        raise InvalidInput(
            f"The table lacks {len(missing)} column(s) the model needs: {missing}",
            [FieldError("missing required column", field=name) for name in missing],
        )


def prepare(frame: pd.DataFrame, schema: FeatureSchema, policy: str = "warn", *, row_offset: int = 0) -> PreparedInput:
    """Coerce ``frame`` to training dtypes and apply the out-of-range policy.

    Parameters
    ----------
    frame : DataFrame
        Rows to score; must hold every feature column (others are ignored).
    schema : FeatureSchema
        The model's features with their training statistics.
    policy : {"warn", "clip", "reject"}
        What to do with a numeric value outside the training [min, max].
    row_offset : int
        Added to row numbers in errors and warnings (a chunk's first row in its batch).

    Returns
    -------
    PreparedInput
        Raises :class:`InvalidInput` for values that cannot be coerced, and for
        out-of-range values under ``reject``.
    """
    check_columns(list(frame.columns), schema)
    errors: list[FieldError] = []
    prepared: dict[str, pd.Series] = {}
    result = PreparedInput(frame=pd.DataFrame(), schema=schema, policy=policy, row_offset=row_offset)
    for feature in schema.features:
        values, faults = _coerce_column(frame[feature.name].reset_index(drop=True), feature)
        errors.extend(FieldError(reason, row=row + row_offset, field=feature.name) for row, reason in faults)
        if feature.kind == "numeric":
            _flag_numeric(result, feature, values)
            if policy == "reject":
                errors.extend(_range_errors(result, feature, values, row_offset))
            elif policy == "clip" and feature.training_min is not None:
                values = values.clip(feature.training_min, feature.training_max)
        else:
            missing = (values == MISSING_CATEGORY).to_numpy()
            result.flags[(feature.name, MISSING)] = missing
            result.flags[(feature.name, UNKNOWN_CATEGORY)] = ~missing & ~values.isin(feature.levels).to_numpy()
        prepared[feature.name] = values
    if errors:
        errors.sort(key=lambda e: e.row if e.row is not None else -1)
        raise _invalid(errors)
    result.frame = pd.DataFrame(prepared)
    return result


def _flag_numeric(result: PreparedInput, feature: Feature, values: pd.Series) -> None:
    array = values.to_numpy()
    result.original[feature.name] = array
    result.flags[(feature.name, MISSING)] = np.isnan(array)
    if feature.training_min is not None:
        with np.errstate(invalid="ignore"):
            result.flags[(feature.name, ABOVE_MAX)] = array > feature.training_max
            result.flags[(feature.name, BELOW_MIN)] = array < feature.training_min


def _range_errors(result: PreparedInput, feature: Feature, values: pd.Series, row_offset: int) -> list[FieldError]:
    errors = []
    for kind in (ABOVE_MAX, BELOW_MIN):
        for row in np.flatnonzero(result.flags.get((feature.name, kind), [])):
            errors.append(
                FieldError(
                    f"{values.iloc[row]} is outside the training range "
                    f"[{feature.training_min}, {feature.training_max}] ({kind}); "
                    "this model rejects out-of-range values",
                    row=int(row) + row_offset,
                    field=feature.name,
                )
            )
    return errors


def _invalid(errors: list[FieldError]) -> InvalidInput:
    shown = errors[:MAX_REPORTED_ERRORS]
    more = f" (first {len(shown)} listed)" if len(errors) > len(shown) else ""
    return InvalidInput(f"{len(errors)} value(s) do not fit the model's schema{more}", shown)

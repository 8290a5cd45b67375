"""Turn incoming rows into the frame a model was trained on, and report what does not fit.

The same coercion runs on training data and on every request, so a value means the same
thing at both times. Checks are vectorised: one pass per column whatever the row count.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from functools import cached_property
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


class Invalid:
    """Marks a value that cannot be coerced; carries the reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def to_number(value: Any) -> float | Invalid:
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return Invalid(f"expected a number, got boolean {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer with hundreds of digits
            return Invalid("expected a finite number, got an integer too large for a float")
        if math.isinf(number):
            # NaN stays missing (pandas' own marker in an object column); infinity is never a value.
            return Invalid(f"expected a finite number, got {number!r}")
        return number
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan
        try:
            number = float(text)
        except ValueError:
            return Invalid(f"expected a number, got {value!r}")
        if not math.isfinite(number):
            return Invalid(f"expected a finite number, got {value!r}")
        return number
    return Invalid(f"expected a number, got {type(value).__name__}")


def to_category(value: Any, feature: Feature) -> str | Invalid:
    if value.__class__ is str and feature.value_type != "boolean":  # the usual case, first
        return value if value.strip() else MISSING_CATEGORY
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
        return Invalid(f"expected true or false, got {value!r}")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return Invalid(f"expected a category, got non-finite {value!r}")
        # 3 and 3.0 are the same level whether they came from JSON, CSV or a float column.
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str):
        return value if value.strip() else MISSING_CATEGORY
    return Invalid(f"expected a category (string), got {type(value).__name__}")


_NUMBER_TYPES = frozenset({float, int, type(None)})


def _finite_floats(values: list) -> bool:
    """Whether no float in ``values`` is NaN or infinite, by numpy when the column is all numbers."""
    types = set(map(type, values))
    if float not in types:
        return True
    if types <= _NUMBER_TYPES:
        try:
            array = np.array(values, dtype=np.float64)  # None becomes NaN: counted apart below
        except OverflowError:
            pass
        else:
            return not np.isinf(array).any() and int(np.isnan(array).sum()) == values.count(None)
    return all(v.__class__ is not float or math.isfinite(v) for v in values)


def _plain_numbers(values: list) -> np.ndarray | None:
    """The column in one numpy call when it holds only finite JSON numbers and nulls (the usual case).

    None when anything needs a value-by-value look: text, booleans, infinities, integers
    beyond float range (numpy and :func:`to_number` agree on everything else, None as NaN).
    """
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    return None if np.isinf(array).any() else array


def _plain_levels(values: list, feature: Feature) -> list[str] | None:
    """:func:`to_category` of a column of text and nulls in one pass; None when other types are in it."""
    if feature.value_type == "boolean" or not all(v is None or v.__class__ is str for v in values):
        return None
    return [MISSING_CATEGORY if v is None or not v.strip() else v for v in values]


def _coerce_values(values: list, feature: Feature) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Coerce one column given as Python values; return the array and each (position, reason) that failed."""
    if feature.kind == "numeric" and (array := _plain_numbers(values)) is not None:
        return array, []
    if feature.kind == "categorical" and (levels := _plain_levels(values, feature)) is not None:
        array = np.empty(len(levels), dtype=object)
        array[:] = levels
        return array, []
    if feature.kind == "numeric":
        converted = [to_number(v) for v in values]
    else:
        converted = [to_category(v, feature) for v in values]
    faults = [(i, v.reason) for i, v in enumerate(converted) if isinstance(v, Invalid)]
    if faults:
        filler = math.nan if feature.kind == "numeric" else MISSING_CATEGORY
        converted = [filler if isinstance(v, Invalid) else v for v in converted]
    if feature.kind == "numeric":
        return np.array(converted, dtype=np.float64), faults
    array = np.empty(len(converted), dtype=object)
    array[:] = converted
    return array, faults


def _coerce_column(column: pd.Series, feature: Feature) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A frame's column coerced; a column pandas already parsed as numbers is converted in one step."""
    if feature.kind == "numeric" and ptypes.is_numeric_dtype(column) and not ptypes.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.flatnonzero(np.isinf(values))
        return values, [(int(i), f"expected a finite number, got {float(values[i])!r}") for i in infinite]
    if feature.kind == "categorical" and (levels := _text_column_levels(column, feature)) is not None:
        return levels, []
    return _coerce_values(column.astype(object).tolist(), feature)


def _text_column_levels(column: pd.Series, feature: Feature) -> np.ndarray | None:
    """:func:`to_category` of a frame's text column in vectorised steps (batch chunks, CSV reads).

    None when the column holds anything but text and missing values.
    """
    if feature.value_type == "boolean" or ptypes.infer_dtype(column, skipna=True) not in ("string", "empty"):
        return None
    missing = column.isna().to_numpy().copy()
    if not missing.all():
        missing |= (column.str.strip() == "").to_numpy(dtype=bool, na_value=False)
    levels = np.array(column.to_numpy(dtype=object, na_value=MISSING_CATEGORY), dtype=object, copy=True)
    levels[missing] = MISSING_CATEGORY
    return levels


@dataclass
class PreparedInput:
    """Rows ready for the model as one array per feature, plus a mask per (feature, warning kind).

    ``columns`` holds what the model sees (float64 for numeric features, after the ``clip``
    policy; strings for categories, missing ones as :data:`MISSING_CATEGORY`). ``original``
    keeps numeric values as sent, so a clipped value is reported as it arrived.
    """

    columns: dict[str, np.ndarray]
    schema: FeatureSchema
    rows: int
    flags: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    original: dict[str, np.ndarray] = field(default_factory=dict)
    policy: str = "warn"
    row_offset: int = 0

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The columns as a frame in feature order, for scikit-learn's own pipeline."""
        return pd.DataFrame({name: self.columns[name] for name in self.schema.names})

    def warnings(self) -> list[dict]:
        """One entry per (row, feature) out of what training saw, rows in order."""
        found: list[tuple[int, int, dict]] = []
        order = {name: i for i, name in enumerate(self.schema.names)}
        for (name, kind), mask in self.flags.items():
            rows = np.flatnonzero(mask)
            if not len(rows):
                continue
            feature = self.schema[name]
            position = order[name]
            if kind == MISSING:
                # The same text for every missing value of a feature: built once, not per row.
                detail = describe_warning(feature, kind, None, self.policy)
                base = {"feature": name, "kind": kind, "value": None}
                bounds = {"training_min": feature.training_min, "training_max": feature.training_max}
                found.extend(
                    (row, position, {"row": row + self.row_offset, **base, **bounds, "detail": detail})
                    for row in rows.tolist()
                )
                continue
            found.extend((row, position, self._warning(row, feature, kind)) for row in rows.tolist())
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
        raw = float(self.original[feature.name][row]) if feature.kind == "numeric" else self.columns[feature.name][row]
        return warning_entry(feature, kind, raw, row + self.row_offset, self.policy)


class FaultReport:
    """Faults in report order; only the first :data:`MAX_REPORTED_ERRORS` are built, all are counted.

    A hostile body can hold millions of faults: building an object for each would cost
    gigabytes before the list is cut to the ones a 422 shows.
    """

    def __init__(self) -> None:
        self.shown: list[FieldError] = []
        self.count = 0

    def add(self, message: str, row: int | None = None, field: str | None = None) -> None:
        self.count += 1
        if len(self.shown) < MAX_REPORTED_ERRORS:
            self.shown.append(FieldError(message, row=row, field=field))

    def add_many(self, count: int) -> None:
        """Faults past the cap, counted without being built."""
        self.count += count

    @property
    def full(self) -> bool:
        return len(self.shown) >= MAX_REPORTED_ERRORS

    def raise_any(self) -> None:
        if self.count:
            more = f" (first {len(self.shown)} listed)" if self.count > len(self.shown) else ""
            raise InvalidInput(f"{self.count} value(s) do not fit the model's schema{more}", self.shown)


def warning_entry(feature: Feature, kind: str, raw: Any, row: int, policy: str) -> dict:
    """One warning of an answer; ``raw`` is the value as sent (numbers) or as coerced (levels)."""
    if feature.kind == "numeric":
        value = None if math.isnan(raw) else raw
    else:
        value = None if raw == MISSING_CATEGORY else raw
    return {
        "row": row,
        "feature": feature.name,
        "kind": kind,
        "value": value,
        "training_min": feature.training_min,
        "training_max": feature.training_max,
        "detail": describe_warning(feature, kind, value, policy),
    }


def describe_warning(feature: Feature, kind: str, value: Any, policy: str) -> str:
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


def row_values(instances: Any, schema: FeatureSchema, allowed_extra: set[str] | None) -> dict[str, list]:
    """Check the JSON shape of ``instances``; return each feature's values, in row order.

    Raises :class:`BadRequest` when the shape is wrong and :class:`InvalidInput` naming
    each row and field when a row lacks a feature, carries an unknown one, or holds a
    non-finite number.
    """
    if not isinstance(instances, list) or not instances:
        raise BadRequest("'instances' must be a non-empty list of objects, one per row")
    known = frozenset(schema.names) | frozenset(schema.ignored) | frozenset(allowed_extra or ())
    columns = _well_formed_columns(instances, schema.names, known)
    return columns if columns is not None else _checked_columns(instances, schema.names, known)


def _well_formed_columns(instances: list, names: list[str], known: frozenset[str]) -> dict[str, list] | None:
    """The columns of rows that are all well formed, gathered in C loops; None at the first doubt.

    Rows with a fault are left to :func:`_checked_columns`, which names every fault in order.
    """
    if not all(row.__class__ is dict and known.issuperset(row) for row in instances):
        return None
    pick = operator.itemgetter(*names)
    try:
        picked = [pick(row) for row in instances]
    except KeyError:
        return None
    columns = list(zip(*picked, strict=True)) if len(names) > 1 else [picked]
    if not all(_finite_floats(values) for values in columns):
        return None
    return {name: list(values) for name, values in zip(names, columns, strict=True)}


def _checked_columns(instances: list, names: list[str], known: frozenset[str]) -> dict[str, list]:
    """Row by row, every fault in (row, field) order: the first 100 built, the rest counted."""
    faults = FaultReport()
    columns: dict[str, list] = {name: [] for name in names}
    appenders = [(name, columns[name].append) for name in names]
    for row, instance in enumerate(instances):
        if not isinstance(instance, dict):
            faults.add(f"row must be an object, got {type(instance).__name__}", row=row)
            continue
        if not known.issuperset(instance):
            for name in instance.keys() - known:
                faults.add("unknown feature; the model does not take it", row=row, field=str(name))
        for name, append in appenders:
            try:
                value = instance[name]
            except KeyError:
                faults.add("missing required feature (send null for a missing value)", row=row, field=name)
                continue
            if isinstance(value, float) and not math.isfinite(value):
                faults.add(f"expected a finite number, got {value!r}", row=row, field=name)
            append(value)
    faults.raise_any()
    return columns


def instances_to_frame(instances: Any, schema: FeatureSchema, *, allowed_extra: set[str] | None = None) -> pd.DataFrame:
    """JSON rows as an object frame in feature order, for the vectorised path (batch jobs).

    Checks the rows as :func:`prepare_rows` does, with the same errors.
    """
    columns = row_values(instances, schema, allowed_extra)
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
    coerced = {f.name: _coerce_column(frame[f.name], f) for f in schema.features}
    return _checked(coerced, len(frame), schema, policy, row_offset)


def prepare_rows(
    instances: Any, schema: FeatureSchema, policy: str = "warn", *, allowed_extra: set[str] | None = None
) -> PreparedInput:
    """:func:`prepare` for JSON rows, with plain Python and numpy: no frame is built.

    The answer, warnings and errors are those of ``prepare(instances_to_frame(...))``;
    this is the path of small requests, where pandas' per-call cost would dominate.
    """
    columns = row_values(instances, schema, allowed_extra)
    coerced = {f.name: _coerce_values(columns[f.name], f) for f in schema.features}
    return _checked(coerced, len(instances), schema, policy, 0)


def _checked(
    coerced: dict[str, tuple[np.ndarray, list[tuple[int, str]]]],
    rows: int,
    schema: FeatureSchema,
    policy: str,
    row_offset: int,
) -> PreparedInput:
    """Flags, the range policy and the report of every fault, in (row, feature) order."""
    result = PreparedInput(columns={}, schema=schema, rows=rows, policy=policy, row_offset=row_offset)
    found: list[tuple[int, int, str, str]] = []  # (row, feature position, feature, message)
    total = 0
    for position, feature in enumerate(schema.features):
        values, faults = coerced[feature.name]
        total += len(faults)
        found.extend((row, position, feature.name, reason) for row, reason in faults[:MAX_REPORTED_ERRORS])
        if feature.kind == "numeric":
            _flag_numeric(result, feature, values)
            if policy == "reject":
                total += _range_faults(result, feature, values, position, found)
            elif policy == "clip" and feature.training_min is not None:
                values = np.clip(values, feature.training_min, feature.training_max)
        else:
            missing = values == MISSING_CATEGORY
            levels = set(feature.levels)
            known = np.fromiter((v in levels for v in values), dtype=bool, count=rows)
            result.flags[(feature.name, MISSING)] = missing
            result.flags[(feature.name, UNKNOWN_CATEGORY)] = ~missing & ~known
        result.columns[feature.name] = values
    if total:
        found.sort(key=lambda item: (item[0], item[1]))
        report = FaultReport()
        for row, _, name, message in found[:MAX_REPORTED_ERRORS]:
            report.add(message, row=row + row_offset, field=name)
        report.add_many(total - len(report.shown))
        report.raise_any()
    return result


def _flag_numeric(result: PreparedInput, feature: Feature, values: np.ndarray) -> None:
    result.original[feature.name] = values
    result.flags[(feature.name, MISSING)] = np.isnan(values)
    if feature.training_min is not None:
        with np.errstate(invalid="ignore"):
            result.flags[(feature.name, ABOVE_MAX)] = values > feature.training_max
            result.flags[(feature.name, BELOW_MIN)] = values < feature.training_min


def _range_faults(
    result: PreparedInput, feature: Feature, values: np.ndarray, position: int, found: list[tuple[int, int, str, str]]
) -> int:
    """Add the first out-of-range values of ``feature`` to ``found``; return how many there are."""
    total = 0
    for kind in (ABOVE_MAX, BELOW_MIN):
        rows = np.flatnonzero(result.flags.get((feature.name, kind), np.zeros(0, dtype=bool)))
        total += len(rows)
        for row in rows[:MAX_REPORTED_ERRORS]:
            message = (
                f"{values[row]} is outside the training range "
                f"[{feature.training_min}, {feature.training_max}] ({kind}); "
                "this model rejects out-of-range values"
            )
            found.append((int(row), position, feature.name, message))
    return total

"""How a loaded model scores prepared rows: a compiled path, or scikit-learn's own.

scikit-learn's ``Pipeline.predict_proba`` spends milliseconds per call on validation and
DataFrame handling before any arithmetic. Here the fitted preprocessing (imputation, scaling,
one-hot encoding) is replayed with numpy into the design matrix the estimator was fitted on,
and the estimator alone scores it: through onnxruntime (converted by skl2onnx at training
time) for requests up to ``onnx_max_rows`` rows, through scikit-learn above that, where its
own vectorised arithmetic measures faster. Both were checked against the full pipeline on
the holdout rows before the version was saved (see :mod:`shared.compiled`); a model whose
preprocessing cannot be replayed exactly is scored by its whole pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.features import after_coercion
from shared.inputs import MISSING_CATEGORY, PreparedInput
from shared.request_rows import PreparedRows
from shared.values import to_json_value

ONNX = "onnx"
SKLEARN = "sklearn"

# onnxruntime's tree ensembles sum probabilities in float32: a tie that scikit-learn breaks
# towards the first class (0.5 against 0.5) can come out 0.49999997 against 0.50000003. Classes
# this close to the best count as tied, and the first of them wins, as in scikit-learn.
TIE_TOLERANCE = 1e-6


def gives_probabilities(task: str, pipeline: Pipeline) -> bool:
    """Whether answers carry class probabilities: classifiers that can estimate them."""
    return task == "classification" and hasattr(pipeline, "predict_proba")


class NotReproducible(Exception):
    """The fitted preprocessing holds a step the numpy replay does not cover."""


def _blocks(preprocess: ColumnTransformer) -> list[tuple[str, Pipeline, list[str], slice]]:
    """The fitted column blocks that produce output, in output order."""
    blocks = []
    for name, transformer, columns in preprocess.transformers_:
        if (isinstance(transformer, str) and transformer == "drop") or len(columns) == 0:
            continue
        if isinstance(transformer, str):
            raise NotReproducible(f"column block {name!r} passes columns through unchanged")
        blocks.append((name, transformer, list(columns), preprocess.output_indices_[name]))
    return blocks


@dataclass
class _NumericBlock:
    columns: list[str]
    fill: np.ndarray  # the training medians
    keep: np.ndarray  # columns the imputer kept (it drops one that was empty in training)
    mean: np.ndarray
    scale: np.ndarray
    out: slice

    @cached_property
    def python_columns(self) -> list[tuple[str, float, float, float]]:
        """(feature, median, mean, scale) of each kept column, as Python floats."""
        return [
            (self.columns[i], float(self.fill[i]), float(mean), float(scale))
            for i, mean, scale in zip(self.keep, self.mean, self.scale, strict=True)
        ]


@dataclass
class _CategoricalColumn:
    name: str
    index: dict[str, int]  # level -> output column; a missing value maps to the imputed level's


class DesignMatrix:
    """The fitted preprocessing of a pipeline, replayed with numpy: same numbers, bit for bit."""

    def __init__(self, numeric: _NumericBlock | None, categorical: list[_CategoricalColumn], width: int):
        self.numeric = numeric
        self.categorical = categorical
        self.width = width

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline) -> DesignMatrix:
        preprocess = pipeline.named_steps.get("preprocess")
        if not isinstance(preprocess, ColumnTransformer):
            raise NotReproducible("the pipeline has no ColumnTransformer step named 'preprocess'")
        numeric, categorical = None, []
        blocks = _blocks(preprocess)
        for name, block, columns, out in blocks:
            steps = dict(block.steps) if isinstance(block, Pipeline) else {}
            if name == "num":
                numeric = _numeric_block(steps, columns, out)
            elif name == "cat":
                categorical = _categorical_columns(steps, columns, out)
            else:
                raise NotReproducible(f"unexpected column block {name!r}")
        width = max((out.stop for *_, out in blocks), default=0)
        return cls(numeric, categorical, width)

    def build(self, prepared: PreparedInput | PreparedRows) -> np.ndarray:
        """The estimator's input for ``prepared``: one float64 row per input row."""
        if isinstance(prepared, PreparedRows):
            return self._build_rows(prepared)
        rows = prepared.rows
        matrix = np.zeros((rows, self.width), dtype=np.float64)
        block = self.numeric
        if block is not None:
            values = np.column_stack([prepared.columns[name] for name in block.columns])
            values = np.where(np.isnan(values), block.fill, values)[:, block.keep]
            matrix[:, block.out] = (values - block.mean) / block.scale
        for column in self.categorical:
            index = column.index
            codes = np.fromiter((index.get(v, -1) for v in prepared.columns[column.name]), dtype=np.intp, count=rows)
            known = np.flatnonzero(codes >= 0)  # an unknown level encodes as all levels off
            matrix[known, codes[known]] = 1.0
        return matrix

    def _build_rows(self, prepared: PreparedRows) -> np.ndarray:
        """:meth:`build` one value at a time: Python floats do numpy's float64 arithmetic exactly."""
        matrix = [[0.0] * self.width for _ in range(prepared.rows)]
        block = self.numeric
        if block is not None:
            start = block.out.start
            for position, (name, fill, mean, scale) in enumerate(block.python_columns):
                for out_row, value in zip(matrix, prepared.values[name], strict=True):
                    out_row[start + position] = ((fill if value != value else value) - mean) / scale
        for column in self.categorical:
            index = column.index
            for out_row, value in zip(matrix, prepared.values[column.name], strict=True):
                code = index.get(value)
                if code is not None:
                    out_row[code] = 1.0
        return np.array(matrix, dtype=np.float64).reshape(prepared.rows, self.width)


def _numeric_block(steps: dict, columns: list[str], out: slice) -> _NumericBlock:
    imputer, scaler = steps.get("impute"), steps.get("scale")
    if not isinstance(imputer, SimpleImputer) or imputer.strategy != "median":
        raise NotReproducible("numeric imputation is not a median SimpleImputer")
    if not isinstance(scaler, StandardScaler) or not (scaler.with_mean and scaler.with_std) or len(steps) != 2:
        raise NotReproducible("numeric scaling is not a plain StandardScaler")
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    keep = np.arange(len(fill)) if imputer.keep_empty_features else np.flatnonzero(~np.isnan(fill))
    return _NumericBlock(columns, np.nan_to_num(fill), keep, scaler.mean_, scaler.scale_, out)


def _categorical_columns(steps: dict, columns: list[str], out: slice) -> list[_CategoricalColumn]:
    imputer, encoder = steps.get("impute"), steps.get("onehot")
    if not isinstance(imputer, SimpleImputer) or imputer.missing_values != MISSING_CATEGORY or len(steps) != 2:
        raise NotReproducible("categorical imputation is not the missing-marker SimpleImputer")
    if not isinstance(encoder, OneHotEncoder) or encoder.drop_idx_ is not None:
        raise NotReproducible("categorical encoding is not a plain OneHotEncoder")
    if getattr(encoder, "_infrequent_enabled", False) or encoder.handle_unknown != "ignore":
        raise NotReproducible("the one-hot encoder groups infrequent levels or refuses unknown ones")
    kept = [
        (name, fill)
        for name, fill in zip(columns, imputer.statistics_, strict=True)
        if imputer.keep_empty_features or not (isinstance(fill, float) and math.isnan(fill))
    ]
    result, offset = [], out.start
    for (name, fill), levels in zip(kept, encoder.categories_, strict=True):
        index = {str(level): i for i, level in enumerate(levels)}
        if len(index) != len(levels) or any(not isinstance(level, str) for level in levels):
            raise NotReproducible(f"the levels of {name!r} are not distinct strings")
        if fill in index:
            index[MISSING_CATEGORY] = index[fill]
        result.append(_CategoricalColumn(name, {level: offset + i for level, i in index.items()}))
        offset += len(levels)
    return result


# How rows enter the ONNX graph. scikit-learn's trees compare float32 copies of the inputs with
# float64 thresholds, so a tree graph gets float64 rows rounded through float32 first to take the
# same branches; linear models see the float64 rows as they are; a graph that only runs in
# float32 (onnxruntime's tree regressors) gets float32 rows.
def _to_float32(matrix: np.ndarray) -> np.ndarray:
    # A value beyond float32's range becomes infinite, as in scikit-learn's own cast: the same branch.
    with np.errstate(over="ignore"):
        return matrix.astype(np.float32)


ONNX_INPUTS = {
    "float64": lambda matrix: matrix,
    "float32-rounded": lambda matrix: _to_float32(matrix).astype(np.float64),
    "float32": _to_float32,
}


class OnnxScorer:
    """An estimator compiled to ONNX, run by onnxruntime on one thread per process."""

    def __init__(self, model_bytes: bytes, probabilities: bool, onnx_input: str = "float64"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread: every API and worker process is already one per core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        self.output = outputs[1 if probabilities and len(outputs) > 1 else 0].name
        self.cast = ONNX_INPUTS[onnx_input]

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        result = np.asarray(self.session.run([self.output], {self.input: self.cast(matrix)})[0], dtype=np.float64)
        return result if result.ndim == 2 and result.shape[1] > 1 else result.reshape(len(matrix))


class SklearnScorer:
    """The fitted estimator on the design matrix, skipping the pipeline's per-call overhead."""

    def __init__(self, estimator, probabilities: bool):
        self.method = estimator.predict_proba if probabilities else estimator.predict

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        # prepare() already refused infinities, so scikit-learn's finiteness scans are skipped;
        # a value beyond float32 becomes infinite in a tree model's own cast, silently.
        with sklearn.config_context(assume_finite=True), np.errstate(over="ignore"):
            return np.asarray(self.method(matrix), dtype=np.float64)


def labels_from(probabilities: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """The column of the best class per row; the first of the tied ones, as numpy's argmax."""
    if tolerance == 0.0:
        return np.argmax(probabilities, axis=1)
    best = probabilities.max(axis=1, keepdims=True)
    return np.argmax(probabilities >= best - tolerance, axis=1)


@dataclass
class Engine:
    """One model's scorers and the rule that picks one for a call.

    ``design`` None means the preprocessing is not replayed and the whole pipeline scores.
    ``onnx_max_rows`` None means the compiled path is faster at every size measured.
    """

    pipeline: Pipeline
    probabilities: bool
    design: DesignMatrix | None = None
    onnx: OnnxScorer | None = None
    onnx_max_rows: int | None = None

    def __post_init__(self) -> None:
        self.tail = after_coercion(self.pipeline)
        self.sklearn = SklearnScorer(self.tail[-1], self.probabilities) if self.design is not None else None
        self.classes = self.tail.classes_ if self.probabilities else None
        self.class_values = [to_json_value(c) for c in self.classes] if self.probabilities else None

    @property
    def path(self) -> str:
        return ONNX if self.onnx is not None else SKLEARN

    def uses_onnx(self, rows: int) -> bool:
        return self.onnx is not None and (self.onnx_max_rows is None or rows <= self.onnx_max_rows)

    def score(self, prepared: PreparedInput | PreparedRows) -> tuple[np.ndarray, float]:
        """Probabilities (rows x classes) or predicted values, and the tie tolerance they need."""
        if self.design is None:
            with sklearn.config_context(assume_finite=True), np.errstate(over="ignore"):
                method = self.tail.predict_proba if self.probabilities else self.tail.predict
                return np.asarray(method(prepared.frame), dtype=np.float64), 0.0
        matrix = self.design.build(prepared)
        if self.uses_onnx(prepared.rows):
            return self.onnx(matrix), TIE_TOLERANCE
        return self.sklearn(matrix), 0.0

"""Compiling a fitted pipeline for serving, and proving the compiled path answers as it does.

At training time the estimator is converted to ONNX (skl2onnx) for double-precision input,
so tree thresholds are compared in float64 as scikit-learn's are and no split moves. The
compiled path (numpy preprocessing, then onnxruntime) may serve only if, on the holdout rows,
it gives the same labels as the full scikit-learn pipeline and probabilities (or values)
within :data:`PARITY_TOLERANCE`. A model that does not convert or does not agree is served
by scikit-learn, never refused. The two engines are also timed on the holdout rows, since
onnxruntime wins on small requests and scikit-learn's own vectorised loops on large chunks.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from shared import tree_onnx
from shared.engine import (
    ONNX,
    ONNX_INPUTS,
    SKLEARN,
    TIE_TOLERANCE,
    DesignMatrix,
    Engine,
    NotReproducible,
    OnnxScorer,
    SklearnScorer,
    labels_from,
)
from shared.features import after_coercion
from shared.inputs import PreparedInput

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-6
# Holdout rows the parity check and the timing use; more says little and costs training time.
MAX_CHECK_ROWS = 5000
TIMING_SIZES = (1, 100, 1000, 5000)
# ONNX-ML opset 3 is the first whose tree operators take float64 thresholds.
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
DESIGN_NUMPY = "numpy"
DESIGN_PIPELINE = "pipeline"


@dataclass
class ServingPlan:
    """What serving a model needs beyond its pipeline: the ONNX bytes, if any, and the why."""

    onnx_bytes: bytes | None
    info: dict  # recorded in the manifest under "serving"


def plan_serving(pipeline: Pipeline, probabilities: bool, holdout: PreparedInput) -> ServingPlan:
    """Decide how ``pipeline`` will be served, from how it does on the ``holdout`` rows."""
    holdout = _first_rows(holdout, MAX_CHECK_ROWS)
    reference, _ = Engine(pipeline, probabilities).score(holdout)
    info: dict = {"path": SKLEARN, "design": DESIGN_PIPELINE, "onnx_max_rows": None, "parity": None}

    def sklearn_plan(reason: str) -> ServingPlan:
        log.info("serving path: scikit-learn (%s)", reason)
        return ServingPlan(None, {**info, "reason": reason})

    try:
        design = DesignMatrix.from_pipeline(pipeline)
    except NotReproducible as exc:
        return sklearn_plan(f"scored by its whole scikit-learn pipeline: {exc}")
    matrix = design.build(holdout)
    expected = after_coercion(pipeline)[:-1].transform(holdout.frame)
    if matrix.shape != np.shape(expected) or not np.array_equal(matrix, expected):
        return sklearn_plan("scored by its whole scikit-learn pipeline: the numpy preprocessing differs from it")
    info["design"] = DESIGN_NUMPY
    estimator = pipeline[-1]
    name = type(estimator).__name__
    attempts = []
    for onnx_input in _input_order(estimator):
        cast = ONNX_INPUTS[onnx_input]
        try:
            onnx_bytes = convert(estimator, cast(matrix), probabilities)
        except Exception as exc:  # skl2onnx raises many types for what it cannot convert
            attempts.append(f"{onnx_input}: skl2onnx cannot convert it ({_first_line(exc)})")
            continue
        try:
            onnx = OnnxScorer(onnx_bytes, probabilities, onnx_input)
            compiled = onnx(matrix)
        except Exception as exc:  # onnxruntime lacks some float64 kernels
            attempts.append(f"{onnx_input}: onnxruntime cannot run it ({_first_line(exc)})")
            continue
        parity = compare(reference, compiled, probabilities)
        if parity["agrees"]:
            break
        attempts.append(f"{onnx_input}: disagrees with scikit-learn ({_describe_parity(parity)})")
    else:
        info["onnx_attempts"] = attempts
        causes = dict.fromkeys(attempt.split(": ", 1)[1] for attempt in attempts)
        return sklearn_plan(f"no ONNX form of {name} serves: " + "; ".join(causes))
    info.update(parity=parity, onnx_input=onnx_input)
    sklearn = SklearnScorer(estimator, probabilities)
    timings = {}
    for size in TIMING_SIZES:  # up to the first size where scikit-learn wins
        timings[size] = (_best_time(onnx, matrix, size), _best_time(sklearn, matrix, size))
        if timings[size][0] > timings[size][1]:
            break
    info["timings_ms"] = {
        str(size): {ONNX: round(o * 1e3, 4), SKLEARN: round(k * 1e3, 4)} for size, (o, k) in timings.items()
    }
    if timings[1][0] > timings[1][1]:
        return sklearn_plan(f"the ONNX form of {name} agrees but is not faster than scikit-learn")
    faster = [size for size, (o, k) in timings.items() if o <= k]
    all_faster = len(faster) == len(TIMING_SIZES)
    info["onnx_max_rows"] = None if all_faster else faster[-1]
    limit = "at every size measured" if all_faster else f"up to {info['onnx_max_rows']} rows per call"
    info["path"] = ONNX
    agreement = "labels equal, probabilities" if probabilities else "values"
    info["reason"] = (
        f"{name} compiled with skl2onnx agrees with scikit-learn on {parity['rows']} holdout rows "
        f"({agreement} within {parity['max_abs_difference']:.1e}); onnxruntime scores "
        f"{limit}" + ("" if all_faster else ", scikit-learn above, where it measured faster")
    )
    log.info("serving path: onnx (%s)", info["reason"])
    return ServingPlan(onnx_bytes, info)


def convert(estimator, matrix: np.ndarray, probabilities: bool) -> bytes:
    """The estimator as an ONNX graph taking rows of the design matrix in ``matrix``'s dtype."""
    if matrix.dtype == np.float32 and tree_onnx.supports(estimator):
        return tree_onnx.build(estimator, matrix.shape[1])
    from skl2onnx import to_onnx

    options = {id(estimator): {"zipmap": False}} if probabilities else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skl2onnx warns about opset choices it then handles
        model = to_onnx(estimator, matrix[:1], target_opset=TARGET_OPSET, options=options)
    return model.SerializeToString()


def compare(reference: np.ndarray, compiled: np.ndarray, probabilities: bool) -> dict:
    """Parity figures of the compiled output against scikit-learn's, on the same rows."""
    if reference.shape != compiled.shape:
        return {"rows": len(reference), "agrees": False, "detail": f"shapes {reference.shape} vs {compiled.shape}"}
    difference = np.abs(reference - compiled)
    figures = {"rows": len(reference), "tolerance": PARITY_TOLERANCE, "max_abs_difference": float(difference.max())}
    if probabilities:
        mismatches = int(np.count_nonzero(labels_from(reference) != labels_from(compiled, TIE_TOLERANCE)))
        figures["label_mismatches"] = mismatches
        figures["agrees"] = mismatches == 0 and figures["max_abs_difference"] <= PARITY_TOLERANCE
    else:
        # Values are compared relative to their size: a price of 1e6 carries float64 rounding in its 10th digit.
        figures["agrees"] = bool(np.all(difference <= PARITY_TOLERANCE * np.maximum(1.0, np.abs(reference))))
    return figures


def engine_for(pipeline: Pipeline, probabilities: bool, info: dict | None, onnx_bytes: bytes | None) -> Engine:
    """The engine a loaded version serves with, as its manifest's ``serving`` record says."""
    if info is None or info.get("design") != DESIGN_NUMPY:
        return Engine(pipeline, probabilities)
    onnx = None
    if info.get("path") == ONNX and onnx_bytes:
        try:
            onnx = OnnxScorer(onnx_bytes, probabilities, info.get("onnx_input", "float64"))
        except Exception:  # an onnxruntime here that cannot run what training's could
            log.exception("the ONNX file cannot be loaded here; serving with scikit-learn")
    return Engine(pipeline, probabilities, DesignMatrix.from_pipeline(pipeline), onnx, info.get("onnx_max_rows"))


def _input_order(estimator) -> list[str]:
    """Input forms to try, likeliest first.

    scikit-learn's trees compare float32 copies of the rows, so a tree graph built for float32
    rows takes the same branches by construction (skl2onnx picks float32 thresholds that keep
    every split) and converts in seconds, where its float64 threshold search takes minutes for a
    forest of deep trees.
    """
    is_tree = hasattr(estimator, "tree_") or hasattr(estimator, "estimators_")
    return ["float32", "float32-rounded"] if is_tree else ["float64", "float32-rounded", "float32"]


def _first_rows(prepared: PreparedInput, rows: int) -> PreparedInput:
    if prepared.rows <= rows:
        return prepared
    columns = {name: values[:rows] for name, values in prepared.columns.items()}
    return PreparedInput(columns=columns, schema=prepared.schema, rows=rows, policy=prepared.policy)


def _best_time(score, matrix: np.ndarray, rows: int, budget_s: float = 0.2) -> float:
    """The best of a few timed calls on ``rows`` rows (fewer when one call is long)."""
    sample = np.resize(matrix, (rows, matrix.shape[1]))
    best, spent, calls = float("inf"), 0.0, 0
    while calls < 5 and (calls < 2 or spent < budget_s):
        started = time.perf_counter()
        score(sample)
        elapsed = time.perf_counter() - started
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return best


def _describe_parity(parity: dict) -> str:
    mismatches = parity.get("label_mismatches")
    labels = f"{mismatches} label(s) differ, " if mismatches else ""
    return f"{labels}largest difference {parity.get('max_abs_difference', float('nan')):.1e} on {parity['rows']} rows"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__

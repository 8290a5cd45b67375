"""scikit-learn tree models as ONNX graphs, built from the fitted arrays in a few numpy calls.

skl2onnx builds the same ONNX-ML tree operators node by node in Python: for the default
forest trained on 20,000 rows (about 270,000 nodes) that takes longer than the fit itself.
This covers the common case (decision trees, random forests and extra trees, single output)
for float32 rows, where scikit-learn's own comparisons are made; anything else goes to
skl2onnx. Either way the graph serves only after the parity check in :mod:`shared.compiled`.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

CLASSIFIERS = (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)
REGRESSORS = (RandomForestRegressor, ExtraTreesRegressor, DecisionTreeRegressor)
OPSETS = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)]


def supports(estimator) -> bool:
    """A fitted single-output tree or forest this module can build."""
    return (
        type(estimator) in CLASSIFIERS + REGRESSORS
        and getattr(estimator, "n_outputs_", 1) == 1
        and all(tree.tree_.n_outputs == 1 for tree in _trees(estimator))
    )


def build(estimator, n_features: int) -> bytes:
    """The estimator as one ONNX-ML tree-ensemble node over float32 rows; serialised bytes."""
    trees = [tree.tree_ for tree in _trees(estimator)]
    nodes = _node_arrays(trees)
    leaves = nodes.pop("leaves")
    rows = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])
    if isinstance(estimator, CLASSIFIERS):
        classes = len(estimator.classes_)
        # Each tree's leaf holds class fractions; the forest's probability is their mean. The sum
        # is taken first and divided once: a fully grown forest's leaves hold 0 or 1, so its sums
        # are exact in float32 and the answer is the float32 nearest scikit-learn's.
        weights = np.concatenate([_fractions(t.value[:, 0, :]) for t in trees])[leaves]
        tree_ids, node_ids = nodes["nodes_treeids"][leaves], nodes["nodes_nodeids"][leaves]
        node = helper.make_node(
            "TreeEnsembleClassifier",
            ["X"],
            ["label", "summed"],
            domain="ai.onnx.ml",
            classlabels_int64s=list(range(classes)),
            post_transform="NONE",
            class_treeids=np.repeat(tree_ids, classes).tolist(),
            class_nodeids=np.repeat(node_ids, classes).tolist(),
            class_ids=np.tile(np.arange(classes), len(leaves)).tolist(),
            class_weights=weights.astype(np.float32).ravel().tolist(),
            **_attributes(nodes),
        )
        outputs = [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes]),
        ]
    else:
        values = np.concatenate([t.value[:, 0, 0] for t in trees])[leaves]
        node = helper.make_node(
            "TreeEnsembleRegressor",
            ["X"],
            ["summed"],
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function="SUM",
            post_transform="NONE",
            target_treeids=nodes["nodes_treeids"][leaves].tolist(),
            target_nodeids=nodes["nodes_nodeids"][leaves].tolist(),
            target_ids=[0] * len(leaves),
            target_weights=values.astype(np.float32).tolist(),
            **_attributes(nodes),
        )
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])]
    mean = helper.make_node("Div", ["summed", "trees"], [outputs[-1].name])
    trees_count = helper.make_tensor("trees", TensorProto.FLOAT, [], [float(len(trees))])
    graph = helper.make_graph([node, mean], type(estimator).__name__, [rows], outputs, initializer=[trees_count])
    return helper.make_model(graph, opset_imports=OPSETS).SerializeToString()


def _trees(estimator) -> list:
    return list(estimator.estimators_) if hasattr(estimator, "estimators_") else [estimator]


def _fractions(values: np.ndarray) -> np.ndarray:
    """Leaf values as class fractions (older scikit-learn stores counts)."""
    totals = values.sum(axis=1, keepdims=True)
    return values / np.where(totals == 0, 1, totals)


def _node_arrays(trees: list) -> dict[str, np.ndarray]:
    """Every node of every tree, concatenated; node ids restart at 0 in each tree."""
    counts = [t.node_count for t in trees]
    left = np.concatenate([t.children_left for t in trees])
    leaf = left == -1
    return {
        "nodes_treeids": np.repeat(np.arange(len(trees)), counts),
        "nodes_nodeids": np.concatenate([np.arange(n) for n in counts]),
        "nodes_featureids": np.where(leaf, 0, np.concatenate([t.feature for t in trees])),
        "nodes_values": np.where(leaf, 0.0, _float32_thresholds(np.concatenate([t.threshold for t in trees]))),
        "nodes_truenodeids": np.where(leaf, 0, left),
        "nodes_falsenodeids": np.where(leaf, 0, np.concatenate([t.children_right for t in trees])),
        "leaf": leaf,
        "leaves": np.flatnonzero(leaf),
    }


def _float32_thresholds(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 ``w`` with ``x <= w`` exactly when ``x <= t``, for every float32 ``x``.

    scikit-learn compares a float32 value with a float64 threshold; in the float32 graph the
    threshold itself must be float32, rounded down when rounding to nearest went up.
    """
    rounded = thresholds.astype(np.float32)
    above = rounded.astype(np.float64) > thresholds
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def _attributes(nodes: dict[str, np.ndarray]) -> dict:
    modes = np.where(nodes["leaf"], "LEAF", "BRANCH_LEQ")
    return {
        "nodes_treeids": nodes["nodes_treeids"].tolist(),
        "nodes_nodeids": nodes["nodes_nodeids"].tolist(),
        "nodes_featureids": nodes["nodes_featureids"].tolist(),
        "nodes_modes": modes.tolist(),
        "nodes_values": nodes["nodes_values"].astype(np.float32).tolist(),
        "nodes_truenodeids": nodes["nodes_truenodeids"].tolist(),
        "nodes_falsenodeids": nodes["nodes_falsenodeids"].tolist(),
    }

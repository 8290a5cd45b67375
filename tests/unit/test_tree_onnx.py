"""Tree models built as ONNX graphs from their fitted arrays answer as scikit-learn does."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from shared import tree_onnx
from shared.engine import OnnxScorer


@pytest.fixture(scope="module")
def table() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(3000, 6))
    labels = (features[:, 0] + features[:, 1] ** 2 + rng.normal(size=3000) > 0.8).astype(int)
    labels[features[:, 2] > 1.5] = 2
    return features, labels


def _scorer(estimator, features: np.ndarray, probabilities: bool) -> OnnxScorer:
    return OnnxScorer(tree_onnx.build(estimator, features.shape[1]), probabilities, "float32")


def test_forest_probabilities_are_scikit_learns_within_float32(table) -> None:
    features, labels = table
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(features, labels)

    compiled = _scorer(forest, features, True)(features)

    expected = forest.predict_proba(features)
    assert compiled.shape == expected.shape == (3000, 3)
    assert np.abs(compiled - expected).max() <= 1e-7  # sums exact in float32, divided once


def test_every_split_goes_the_way_scikit_learns_does_at_the_threshold(table) -> None:
    """Values at, just below and just above each threshold, in float32: the same leaf as scikit-learn."""
    features, labels = table
    tree = DecisionTreeClassifier(random_state=0, max_depth=8).fit(features, labels)
    inner = tree.tree_.children_left != -1
    probes = []
    for feature, threshold in zip(tree.tree_.feature[inner], tree.tree_.threshold[inner], strict=True):
        for value in (np.float32(threshold), np.nextafter(np.float32(threshold), np.float32(np.inf))):
            row = features[0].copy()
            row[feature] = value
            probes.append(row)
    probes = np.array(probes)

    compiled = _scorer(tree, probes, True)(probes)

    np.testing.assert_array_equal(compiled.argmax(axis=1), tree.predict_proba(probes).argmax(axis=1))
    assert np.abs(compiled - tree.predict_proba(probes)).max() <= 1e-7


def test_regressor_values_are_scikit_learns(table) -> None:
    features, labels = table
    target = features[:, 0] * 1000 + labels
    forest = ExtraTreesRegressor(n_estimators=20, random_state=0).fit(features, target)

    compiled = _scorer(forest, features, False)(features)

    np.testing.assert_allclose(compiled, forest.predict(features), rtol=1e-6)


def test_other_models_are_left_to_skl2onnx(table) -> None:
    features, labels = table
    assert tree_onnx.supports(RandomForestClassifier(n_estimators=3).fit(features, labels))
    assert not tree_onnx.supports(GradientBoostingClassifier(n_estimators=3).fit(features, labels))
    assert not tree_onnx.supports(RandomForestClassifier(n_estimators=3).fit(features, np.c_[labels, labels]))


def test_a_value_beyond_float32_takes_scikit_learns_branch_without_a_warning(table) -> None:
    """1e300 is infinite in float32 for both; the cast warns nobody (warnings are errors here)."""
    features, labels = table
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)
    rows = features[:3].copy()
    rows[:, 0] = [1e300, -1e300, 3e38 * 10]

    compiled = _scorer(forest, rows, True)(rows)

    # As the service calls it: finiteness taken as checked, the overflowing cast silent.
    with sklearn.config_context(assume_finite=True), np.errstate(over="ignore"):
        expected = forest.predict_proba(rows)
    assert np.abs(compiled - expected).max() <= 1e-7

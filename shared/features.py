"""The feature engineering fitted with the model, as named steps of one Pipeline."""

from __future__ import annotations

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.errors import InvalidInput
from shared.inputs import MISSING_CATEGORY, prepare
from shared.schema import FeatureSchema

COERCE_STEP = "coerce"


def coercion_policy(policy: str) -> str:
    """What a range policy does to the values a model sees: only "clip" changes them."""
    return "clip" if policy == "clip" else "warn"


class CoerceFeatures(TransformerMixin, BaseEstimator):
    """Raw rows (as ``pd.read_csv`` gives them) to the values the preprocessing was fitted on.

    The first step of every pipeline, so a saved model answers raw rows by itself: text to
    numbers, missing categories to the imputer's marker, ``3.0`` and ``"3"`` to one level, and
    values clipped to the training range when the model's policy is ``clip``. The service runs
    the same coercion (with its checks and warnings) before the pipeline and skips this step.
    A value that cannot be coerced raises ValueError naming the row and the feature.

    Parameters
    ----------
    schema : FeatureSchema
        The features and the training range of each.
    policy : {"warn", "clip", "reject"}
        Only ``clip`` changes values here; the service refuses out-of-range rows under ``reject``.
    """

    def __init__(self, schema: FeatureSchema, policy: str = "warn"):
        self.schema = schema
        self.policy = policy

    def fit(self, X: pd.DataFrame, y=None) -> CoerceFeatures:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        try:
            return prepare(pd.DataFrame(X).reset_index(drop=True), self.schema, coercion_policy(self.policy)).frame
        except InvalidInput as exc:
            raise ValueError(exc.describe(max_errors=5, separator="; ")) from exc


def build_preprocessor(schema: FeatureSchema) -> ColumnTransformer:
    """Imputation, scaling and one-hot encoding for the schema's features.

    Every step is one skl2onnx converts, so the fitted pipeline can be compiled later.
    Unknown categories encode as all levels off rather than failing.
    """
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(missing_values=MISSING_CATEGORY, strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [("num", numeric, schema.numeric), ("cat", categorical, schema.categorical)],
        remainder="drop",
    )


def build_pipeline(schema: FeatureSchema, estimator: BaseEstimator, policy: str = "warn") -> Pipeline:
    """Coercion, preprocessing and estimator as one object: fitted, saved and loaded together."""
    return Pipeline(
        [
            (COERCE_STEP, CoerceFeatures(schema, policy)),
            ("preprocess", build_preprocessor(schema)),
            ("model", estimator),
        ]
    )


def after_coercion(pipeline: Pipeline) -> Pipeline:
    """The pipeline without its coercion step, for rows the service has already coerced.

    Models saved before the step existed are returned as they are.
    """
    return pipeline[1:] if pipeline.steps[0][0] == COERCE_STEP else pipeline

"""The feature engineering fitted with the model, as named steps of one Pipeline."""

from __future__ import annotations

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.inputs import MISSING_CATEGORY
from shared.schema import FeatureSchema


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


def build_pipeline(schema: FeatureSchema, estimator: BaseEstimator) -> Pipeline:
    """Preprocessing and estimator as one object: fitted, saved and loaded together."""
    return Pipeline([("preprocess", build_preprocessor(schema)), ("model", estimator)])

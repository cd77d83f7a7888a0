"""Preprocessing inside the model: one Pipeline that takes raw rows exactly as they appear in the file."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# A category seen in less than 1 % of the training rows is grouped with the other rare ones,
# and at most MAX_CATEGORIES columns come out of one categorical column.
MIN_FREQUENCY = 0.01
MAX_CATEGORIES = 50


def build_preprocessor(numeric: Sequence[str], categorical: Sequence[str], scale: bool) -> ColumnTransformer:
    """Numeric: median imputation (+ standard scaling); categorical: most-frequent imputation + one-hot."""
    transformers = []
    if numeric:
        steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy="median"))]
        if scale:
            steps.append(("scale", StandardScaler()))
        transformers.append(("num", Pipeline(steps), list(numeric)))
    if categorical:
        transformers.append(("cat", Pipeline([
            ("impute", SimpleImputer(strategy="most_frequent", missing_values=np.nan)),
            ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=MIN_FREQUENCY,
                                     max_categories=MAX_CATEGORIES, sparse_output=False)),
        ]), list(categorical)))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def build_pipeline(estimator: RegressorMixin, numeric: Sequence[str], categorical: Sequence[str],
                   scale: bool) -> Pipeline:
    """The full model: preprocessing then ``estimator``."""
    return Pipeline([("preprocess", build_preprocessor(numeric, categorical, scale)), ("model", estimator)])


def summary(numeric: Sequence[str], categorical: Sequence[str], scale: bool) -> dict[str, str]:
    """Preprocessing as MLflow params (short strings)."""
    return {
        "prep_numeric": f"median impute{' + standard scale' if scale else ''} ({len(numeric)} columns)",
        "prep_categorical": (f"most-frequent impute + one-hot, unknown ignored, rare (<{MIN_FREQUENCY:.0%}) "
                             f"grouped, max {MAX_CATEGORIES} ({len(categorical)} columns)"),
    }


def output_columns(pipeline: Pipeline) -> list[str]:
    """For each column the fitted preprocessor outputs, the raw input column it comes from."""
    pre: ColumnTransformer = pipeline.named_steps["preprocess"]
    owners: list[str] = []
    for name, transformer, columns in pre.transformers_:
        if name == "num":
            owners.extend(columns)
        elif name == "cat":
            encoder: OneHotEncoder = transformer.named_steps["onehot"]
            infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(columns)
            for col, cats, rare in zip(columns, encoder.categories_, infrequent, strict=True):
                n_rare = 0 if rare is None else len(rare)
                owners.extend([col] * (len(cats) - n_rare + (1 if n_rare else 0)))
    return owners


def importance_by_column(pipeline: Pipeline, values: np.ndarray) -> pd.Series | None:
    """Per-output importances summed back onto the raw input columns (None when shapes disagree)."""
    owners = output_columns(pipeline)
    values = np.asarray(values, dtype=float).ravel()
    if len(owners) != len(values):
        return None
    return pd.Series(values, index=owners).groupby(level=0, sort=False).sum().sort_values(ascending=False)

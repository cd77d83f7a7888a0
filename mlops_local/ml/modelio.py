"""Save a fitted pipeline as an MLflow sklearn model: skops (never pickle), signature, pinned deps."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from sklearn.pipeline import Pipeline

EXAMPLE_ROWS = 5
_PINNED = ("mlflow", "scikit-learn", "skops", "pandas", "numpy")


@functools.lru_cache(maxsize=1)
def pip_requirements() -> tuple[str, ...]:
    """Exact versions of what loading the model needs (inferring them costs seconds per model)."""
    return tuple(f"{name}=={metadata.version(name)}" for name in _PINNED)


def signature(X: pd.DataFrame, numeric: Sequence[str]) -> ModelSignature:
    """Raw columns in file order: numeric as double (NaN allowed), the others as string."""
    numeric = set(numeric)
    inputs = Schema([ColSpec("double" if c in numeric else "string", c) for c in X.columns])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]))


def input_example(X: pd.DataFrame, numeric: Sequence[str]) -> pd.DataFrame:
    """A few real training rows; missing text values filled with the column's most frequent value."""
    example = X.head(EXAMPLE_ROWS).copy()
    for col in X.columns:
        if col not in numeric and example[col].isna().any():
            mode = X[col].mode(dropna=True)
            example[col] = example[col].fillna(mode.iloc[0] if len(mode) else "")
    return example


def trusted_types(pipeline: Pipeline) -> list[str]:
    """The exact non-default types skops must trust to load ``pipeline`` (e.g. sklearn's tree objects)."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))


def save_model_dir(pipeline: Pipeline, path: Path, X_train: pd.DataFrame, numeric: Sequence[str]) -> Path:
    """Write the MLflow model directory for ``pipeline`` at ``path`` (which must not exist)."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(
        pipeline, str(path), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted_types(pipeline), signature=signature(X_train, numeric),
        input_example=input_example(X_train, numeric), pip_requirements=list(pip_requirements()),
    )
    return path

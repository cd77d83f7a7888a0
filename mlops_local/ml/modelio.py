"""Save a fitted pipeline as an MLflow sklearn model: skops (never pickle), signature, pinned deps.

``mlflow.sklearn.save_model`` serialises a skops model twice over (our dump to find the exact types to
trust, its own dump, then a verification load), which is most of the tracking overhead of a forest.
The fast path dumps once and writes the same model directory (MLmodel with the sklearn and pyfunc
flavours, skops file, requirements, environments, input example) with MLflow's own helpers; if those
helpers move in a future MLflow, it falls back to the public ``save_model``.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema, TensorSpec
from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

EXAMPLE_ROWS = 5
MODEL_FILE = "model.skops"
METADATA_KEY = "mlops_local"  # MLmodel metadata: feature kinds and training-value hints
_PINNED = ("mlflow", "scikit-learn", "skops", "pandas", "numpy")


@functools.lru_cache(maxsize=1)
def pip_requirements() -> tuple[str, ...]:
    """Exact versions of what loading the model needs (inferring them costs seconds per model)."""
    return tuple(f"{name}=={metadata.version(name)}" for name in _PINNED)


def signature(X: pd.DataFrame, numeric: Sequence[str]) -> ModelSignature:
    """Raw columns in file order: text columns as string, numeric columns as Any.

    MLflow refuses int64 input for a ``double`` column ("cannot safely convert") and float64 input
    (what a missing value turns an integer column into) for a ``long`` one, so no numeric type accepts
    both the rows of a file read with pandas and the same rows with a gap; the pipeline's imputer
    converts whatever number arrives. Which columns are numeric is in the model metadata
    (:func:`feature_hints`).
    """
    numeric = set(numeric)
    inputs = Schema([ColSpec(AnyType() if c in numeric else "string", c) for c in X.columns])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]))


def feature_hints(X: pd.DataFrame, numeric: Sequence[str], target: str, top: int = 30) -> dict:
    """Model metadata for input forms: numeric min/median/max, common values of text columns."""
    numeric_hints = {}
    for col in numeric:
        values = X[col].dropna()
        numeric_hints[col] = ({"min": float(values.min()), "median": float(values.median()),
                               "max": float(values.max()), "integer": bool((values % 1 == 0).all())}
                              if len(values) else {})
    categorical_hints = {col: [str(v) for v in X[col].value_counts().index[:top]]
                         for col in X.columns if col not in set(numeric)}
    return {"target": target, "features": [str(c) for c in X.columns],
            "numeric": numeric_hints, "categorical": categorical_hints}
def input_example(X: pd.DataFrame, numeric: Sequence[str]) -> pd.DataFrame:
    """A few real training rows; missing text values filled with the column's most frequent value."""
    example = X.head(EXAMPLE_ROWS).copy()
    for col in X.columns:
        if col not in numeric and example[col].isna().any():
            mode = X[col].mode(dropna=True)
            example[col] = example[col].fillna(mode.iloc[0] if len(mode) else "")
    return example


def _skops_dumps(obj: object) -> tuple[bytes, dict | None]:
    """``skops.io.dumps`` with a compact schema.json.

    skops writes its schema with ``indent=2``, which sends ``json`` down its pure-Python encoder: for
    a 100-tree forest that is two thirds of the dump time and a quarter of the file. Loading does not
    care about whitespace. Uses skops internals, hence the fallback to the public function.
    """
    import skops
    import skops.io

    try:
        from skops.io._persist import SaveContext, get_state
    except ImportError:
        return skops.io.dumps(obj), None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zip_file:
        context = SaveContext(zip_file=zip_file)
        state = get_state(obj, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        zip_file.writestr("schema.json", json.dumps(state, separators=(",", ":")))
    return buffer.getvalue(), state


def _type_signature(state: object) -> frozenset[tuple[str, str, str]]:
    """Every (module, class, loader) named in a skops state tree: what decides its untrusted types."""
    found: set[tuple[str, str, str]] = set()
    stack = [state]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add((str(node.get("__module__")), str(node["__class__"]), str(node.get("__loader__"))))
            stack.extend(v for v in node.values() if isinstance(v, (dict, list, tuple)))
        elif isinstance(node, (list, tuple)):
            stack.extend(v for v in node if isinstance(v, (dict, list, tuple)))
    return frozenset(found)


# Type signature -> untrusted types. skops re-parses the whole blob to answer (as long as the dump
# itself for a forest); the answer depends only on which types the state names, so it is cached.
_UNTRUSTED: dict[frozenset[tuple[str, str, str]], list[str]] = {}
_UNTRUSTED_MAX = 256


def skops_blob(pipeline: Pipeline) -> tuple[bytes, list[str]]:
    """The skops serialisation of ``pipeline`` and the exact non-default types it needs trusted."""
    import skops.io

    blob, state = _skops_dumps(pipeline)
    if state is None:
        return blob, sorted(skops.io.get_untrusted_types(data=blob))
    key = _type_signature(state)
    untrusted = _UNTRUSTED.get(key)
    if untrusted is None:
        untrusted = sorted(skops.io.get_untrusted_types(data=blob))
        if len(_UNTRUSTED) >= _UNTRUSTED_MAX:
            _UNTRUSTED.clear()
        _UNTRUSTED[key] = untrusted
    return blob, list(untrusted)


def trusted_types(pipeline: Pipeline) -> list[str]:
    """The exact types skops must trust to load ``pipeline`` (e.g. sklearn's tree objects)."""
    return skops_blob(pipeline)[1]


def _write_fast(pipeline: Pipeline, path: Path, signature_: ModelSignature, example: pd.DataFrame,
                metadata: dict) -> None:
    import sklearn
    from mlflow import pyfunc
    from mlflow.models import Model
    from mlflow.models.utils import _save_example
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
    )

    blob, trusted = skops_blob(pipeline)
    path.mkdir(parents=True)
    (path / MODEL_FILE).write_bytes(blob)
    model = Model()
    model.signature = signature_
    model.metadata = metadata
    _save_example(model, example, str(path))
    pyfunc.add_to_model(model, loader_module="mlflow.sklearn", model_path=MODEL_FILE,
                        conda_env=_CONDA_ENV_FILE_NAME, python_env=_PYTHON_ENV_FILE_NAME,
                        predict_fn="predict")
    model.add_flavor("sklearn", pickled_model=MODEL_FILE, sklearn_version=sklearn.__version__,
                     serialization_format="skops", code=None, skops_trusted_types=trusted)
    model.model_size_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    model.save(str(path / "MLmodel"))
    for name, text in _environment_files().items():
        (path / name).write_text(text)


@functools.lru_cache(maxsize=1)
def _environment_files() -> dict[str, str]:
    """conda.yaml, requirements.txt and python_env.yaml: the same for every model of this process.

    What ``_process_pip_requirements`` writes for our exact pins, without its check of the pins against
    the installed packages: they are read from the installed packages, and the check scans the
    metadata of every installed distribution (about 0.4 s, once per process: a fresh sweep worker's
    first model save paid it)."""
    import yaml
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _mlflow_conda_env,
        _PythonEnv,
    )

    requirements = list(pip_requirements())  # mlflow pinned first, as MLflow would insert it
    conda_env = _mlflow_conda_env(additional_pip_deps=requirements, install_mlflow=False)
    with tempfile.TemporaryDirectory() as tmp:
        python_env = Path(tmp) / _PYTHON_ENV_FILE_NAME
        _PythonEnv.current().to_yaml(str(python_env))
        python_env_text = python_env.read_text()
    return {
        _CONDA_ENV_FILE_NAME: yaml.safe_dump(conda_env, default_flow_style=False),
        _REQUIREMENTS_FILE_NAME: "\n".join(requirements),
        _PYTHON_ENV_FILE_NAME: python_env_text,
    }


def save_model_dir(pipeline: Pipeline, path: Path, X_train: pd.DataFrame, numeric: Sequence[str],
                   target: str) -> Path:
    """Write the MLflow model directory for ``pipeline`` at ``path`` (which must not exist)."""
    sig, example = signature(X_train, numeric), input_example(X_train, numeric)
    metadata = {METADATA_KEY: feature_hints(X_train, numeric, target)}
    try:
        _write_fast(pipeline, path, sig, example, metadata)
        return path
    except (ImportError, AttributeError, TypeError) as exc:  # MLflow internals moved: take the public road
        log.warning("fast model save unavailable (%s); using mlflow.sklearn.save_model", exc)
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    import mlflow.sklearn

    mlflow.sklearn.save_model(
        pipeline, str(path), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted_types(pipeline), signature=sig, input_example=example,
        pip_requirements=list(pip_requirements()), metadata=metadata,
    )
    return path

"""The fast model writer against MLflow's own ``save_model``: the whole model directory must match.

modelio writes the MLflow model directory with MLflow's private helpers (``_save_example``,
``_mlflow_conda_env``, ``_PythonEnv``) and skops' ``_persist`` to save a forest once instead of three
times. Those helpers can change in any release: this test compares every file, and every MLmodel field,
with what the public ``mlflow.sklearn.save_model`` writes for the same pipeline, so a drift shows here
(setup.cfg pins the versions it was checked with)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.ensemble import RandomForestRegressor

from mlops_local.ml import modelio
from mlops_local.ml.preprocessing import build_pipeline

# Fields that differ between any two saves of the same model.
VOLATILE = {"utc_time_created", "model_uuid", "model_size_bytes", "model_id"}


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    X = pd.DataFrame({"size": [1.0, 2.0, 3.5, 4.0, 5.5, 6.0, 7.5, 8.0] * 3,
                      "kind": ["a", "b", "a", "c", "b", "a", "c", "b"] * 3,
                      "count": [1, 2, 3, 4, 5, 6, 7, 8] * 3})
    return X, X["size"] * 2 + X["count"]


def _strip(mlmodel: dict) -> dict:
    return {k: v for k, v in mlmodel.items() if k not in VOLATILE}


def test_fast_writer_matches_mlflows_save_model_file_for_file(tmp_path: Path) -> None:
    import mlflow.sklearn

    X, y = _frame()
    numeric = ["size", "count"]
    pipeline = build_pipeline(RandomForestRegressor(n_estimators=5, random_state=0, n_jobs=1),
                              numeric, ["kind"], scale=False).fit(X, y)
    fast = modelio.save_model_dir(pipeline, tmp_path / "fast", X, numeric, "target")
    public = tmp_path / "public"
    mlflow.sklearn.save_model(
        pipeline, str(public), serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=modelio.trusted_types(pipeline), signature=modelio.signature(X, numeric),
        input_example=modelio.input_example(X, numeric), pip_requirements=list(modelio.pip_requirements()),
        metadata={modelio.METADATA_KEY: modelio.feature_hints(X, numeric, "target")})

    assert sorted(p.name for p in fast.iterdir()) == sorted(p.name for p in public.iterdir())
    ours, theirs = (yaml.safe_load((d / "MLmodel").read_text()) for d in (fast, public))
    assert _strip(ours) == _strip(theirs)
    for name in ("requirements.txt", "conda.yaml", "python_env.yaml", "input_example.json",
                 "serving_input_example.json"):
        if (public / name).exists():
            assert (fast / name).read_text().strip() == (public / name).read_text().strip(), name
    # both load the same way and predict the same
    loaded = [mlflow.sklearn.load_model(str(d)) for d in (fast, public)]
    assert list(loaded[0].predict(X)) == pytest.approx(list(loaded[1].predict(X)))

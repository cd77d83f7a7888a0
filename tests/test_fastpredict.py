"""The model service's forest predict gives bit-for-bit scikit-learn's numbers, through the safe loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge

from mlops_local.ml import modelio
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.preprocessing import build_pipeline
from mlops_local.ml.safeload import checksum_tags, load_local
from mlops_local.ml.types import DatasetSpec
from mlops_local.runmeta import TAG_MODEL_SHA256
from mlops_local.serving.fastpredict import ForestPipeline, fast_predictor, for_serving


@pytest.fixture(scope="module")
def co2() -> tuple[pd.DataFrame, pd.Series, list[str], list[str]]:
    data = load_dataset(DatasetSpec("co2_canada"))
    X = data.X.head(1500).copy()
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    return X, data.y.head(1500), numeric, categorical


def _rows(X: pd.DataFrame) -> pd.DataFrame:
    """Rows to score: unseen ones, with gaps and a category never seen in training."""
    rows = X.sample(60, random_state=1).reset_index(drop=True)
    rows.loc[3, rows.columns[0]] = np.nan
    rows.loc[7, "Cylinders"] = np.nan
    rows.loc[11, "Make"] = "NEVER-SEEN"
    return rows


@pytest.mark.parametrize("forest", [RandomForestRegressor(n_estimators=15, random_state=0, n_jobs=1),
                                    RandomForestRegressor(n_estimators=7, max_depth=4, random_state=3),
                                    ExtraTreesRegressor(n_estimators=9, random_state=0, n_jobs=1)],
                         ids=["random_forest", "shallow_default_jobs", "extra_trees"])
def test_forest_predictions_are_bit_for_bit_sklearns(co2, forest) -> None:
    X, y, numeric, categorical = co2
    pipeline = build_pipeline(forest, numeric, categorical, scale=False).fit(X, y)
    fast = fast_predictor(pipeline)
    assert isinstance(fast, ForestPipeline)
    rows = _rows(X)
    expected = pipeline.predict(rows)
    assert np.array_equal(fast.predict(rows), expected)  # one batch
    one_by_one = np.concatenate([fast.predict(rows.iloc[[i]]) for i in range(len(rows))])
    assert np.array_equal(one_by_one, expected)  # the service's case: one row per request
    assert fast.predict(rows).dtype == expected.dtype == np.float64


@pytest.mark.parametrize("estimator", [GradientBoostingRegressor(n_estimators=5), Ridge(),
                                       RandomForestRegressor(n_estimators=4, n_jobs=2)],
                         ids=["boosting", "ridge", "forest_in_threads"])
def test_other_models_keep_their_own_predict(co2, estimator) -> None:
    X, y, numeric, categorical = co2
    pipeline = build_pipeline(estimator, numeric, categorical, scale=True).fit(X, y)
    assert fast_predictor(pipeline) is pipeline


def test_for_serving_wraps_the_safely_loaded_model_and_keeps_mlflows_signature_checks(co2,
                                                                                      tmp_path: Path) -> None:
    X, y, numeric, categorical = co2
    pipeline = build_pipeline(RandomForestRegressor(n_estimators=10, random_state=0, n_jobs=1), numeric,
                              categorical, scale=False).fit(X, y)
    model_dir = modelio.save_model_dir(pipeline, tmp_path / "model", X, numeric, "CO2")
    loaded = load_local(model_dir, checksum_tags(model_dir)[TAG_MODEL_SHA256])
    served = for_serving(loaded)
    assert served is not loaded and isinstance(served.get_raw_model(), ForestPipeline)
    rows = _rows(X)
    assert np.array_equal(served.predict(rows), loaded.predict(rows))
    for model in (loaded, served):  # a missing column is refused by MLflow's schema check in both
        with pytest.raises(MlflowException, match="Cylinders"):
            model.predict(rows.drop(columns=["Cylinders"]))

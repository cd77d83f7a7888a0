"""Evaluation and preprocessing units: RMSE really is sqrt(MSE), split checks, rare categories, importance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlops_local.errors import UserError
from mlops_local.ml import evaluation, modelio, preprocessing
from mlops_local.ml.catalog import get_model


def test_rmse_is_the_square_root_of_the_mse_computed_independently():
    rng = np.random.default_rng(0)
    y_true = rng.normal(200, 40, 500)
    y_pred = y_true + rng.normal(0, 7, 500)
    mse = sum((a - b) ** 2 for a, b in zip(y_true, y_pred, strict=True)) / len(y_true)
    metrics = evaluation.regression_metrics(y_true, y_pred)
    assert metrics["rmse"] == pytest.approx(math.sqrt(mse), rel=1e-12)
    assert metrics["rmse"] != pytest.approx(mse)  # the original project's bug: MSE logged as "rmse"
    assert metrics["mae"] == pytest.approx(sum(abs(a - b) for a, b in zip(y_true, y_pred, strict=True)) / 500)
    ss_res = sum((a - b) ** 2 for a, b in zip(y_true, y_pred, strict=True))
    ss_tot = sum((a - y_true.mean()) ** 2 for a in y_true)
    assert metrics["r2"] == pytest.approx(1 - ss_res / ss_tot)


def test_perfect_predictions():
    y = np.array([1.0, 2.0, 3.0])
    assert evaluation.regression_metrics(y, y) == {"r2": 1.0, "rmse": 0.0, "mae": 0.0}


@pytest.mark.parametrize(("test_size", "fragment"), [
    (0, "between 0 and 1"), (1, "between 0 and 1"), (1.5, "between 0 and 1"), (-0.2, "between 0 and 1"),
    ("abc", "must be a number"), (None, "must be a number"), (True, "between 0 and 1"),
])
def test_test_size_outside_zero_one_is_refused(test_size, fragment):
    with pytest.raises(UserError, match=fragment):
        evaluation.validate_split(100, test_size, 0)


@pytest.mark.parametrize(("folds", "fragment"), [
    (1, "between 2 and 20"), (-3, "between 2 and 20"), (21, "between 2 and 20"), (2.5, "whole number"),
    ("x", "whole number"),
])
def test_bad_cv_folds_are_refused(folds, fragment):
    with pytest.raises(UserError, match=fragment):
        evaluation.validate_split(100, 0.2, folds)


def test_split_must_leave_rows_on_both_sides():
    assert evaluation.validate_split(100, "0.25", "5") == (0.25, 5)
    with pytest.raises(UserError, match="leaves 9 training and 1 test rows"):
        evaluation.validate_split(10, 0.1, 0)
    with pytest.raises(UserError, match="cannot exceed the 8 training rows"):
        evaluation.validate_split(10, 0.2, 9)


def test_split_is_seeded():
    X = pd.DataFrame({"a": np.arange(50.0)})
    y = pd.Series(np.arange(50.0))
    first = evaluation.split(X, y, 0.2, 7)[1].index.tolist()
    assert first == evaluation.split(X, y, 0.2, 7)[1].index.tolist()
    assert first != evaluation.split(X, y, 0.2, 8)[1].index.tolist()


def _frame(n: int = 200) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(1)
    make = np.where(np.arange(n) < n - 1, np.where(np.arange(n) % 2 == 0, "FORD", "BMW"), "RARE")
    X = pd.DataFrame({"Engine Size(L)": rng.uniform(1, 5, n), "Make": make.astype(object)})
    X.loc[3, "Engine Size(L)"] = np.nan
    X.loc[4, "Make"] = np.nan
    y = pd.Series(50 * X["Engine Size(L)"].fillna(3) + (X["Make"] == "BMW") * 30 + rng.normal(0, 1, n))
    return X, y


def test_pipeline_imputes_groups_rare_categories_and_ignores_unknown_ones():
    X, y = _frame()
    pipe = preprocessing.build_pipeline(get_model("ridge").build({}), ["Engine Size(L)"], ["Make"], True)
    pipe.fit(X, y)
    encoder = pipe.named_steps["preprocess"].named_transformers_["cat"].named_steps["onehot"]
    assert list(encoder.infrequent_categories_[0]) == ["RARE"]
    owners = preprocessing.output_columns(pipe)
    assert owners == ["Engine Size(L)", "Make", "Make", "Make"]  # BMW, FORD, infrequent
    raw = pd.DataFrame({"Engine Size(L)": [np.nan, 2.0], "Make": ["TESLA", np.nan]}).astype(
        {"Make": object})
    assert np.isfinite(pipe.predict(raw)).all()


def test_importance_kinds_follow_the_estimator():
    X, y = _frame()
    kinds = {}
    for name, params in (("random_forest", {"n_estimators": 5}), ("ridge", {}), ("knn", {})):
        spec = get_model(name)
        pipe = preprocessing.build_pipeline(spec.build(params, seed=0), ["Engine Size(L)"], ["Make"],
                                            spec.needs_scaling).fit(X, y)
        values, kind = evaluation.feature_importance(pipe, X, y, seed=0)
        kinds[name] = kind
        assert set(values.index) == {"Engine Size(L)", "Make"}  # summed back onto raw columns
        assert values.index[0] == "Engine Size(L)"
    assert kinds["random_forest"] == "impurity" and kinds["ridge"] == "abs_coef"
    assert kinds["knn"].startswith("permutation")


def test_cross_validation_reports_mean_and_std_of_r2_and_rmse():
    X, y = _frame()
    pipe = preprocessing.build_pipeline(get_model("ridge").build({}), ["Engine Size(L)"], ["Make"], True)
    cv = evaluation.cross_validation(pipe, X, y, 4, seed=0)
    assert set(cv) == {"cv_r2_mean", "cv_r2_std", "cv_rmse_mean", "cv_rmse_std"}
    assert 0.9 < cv["cv_r2_mean"] <= 1 and cv["cv_rmse_mean"] > 0 and cv["cv_rmse_std"] >= 0


def test_signature_allows_missing_numbers_and_example_has_no_missing_text():
    X, _ = _frame()
    sig = modelio.signature(X, ["Engine Size(L)"])
    types = {c["name"]: c["type"] for c in sig.inputs.to_dict()}
    assert types == {"Engine Size(L)": "any", "Make": "string"}  # int64 and NaN-holding float64 both pass
    hints = modelio.feature_hints(X, ["Engine Size(L)"], "y")
    assert hints["numeric"]["Engine Size(L)"]["min"] >= 1
    assert hints["categorical"]["Make"][:2] == ["FORD", "BMW"]
    example = modelio.input_example(X.iloc[2:8], ["Engine Size(L)"])
    assert example["Make"].notna().all() and example["Engine Size(L)"].isna().any()
    assert all(r.startswith(("mlflow==", "scikit-learn==", "skops==", "pandas==", "numpy=="))
               for r in modelio.pip_requirements())


def test_environment_files_are_what_mlflow_writes_for_the_pinned_requirements() -> None:
    import yaml
    from mlflow.utils.environment import _process_pip_requirements

    modelio._environment_files.cache_clear()
    files = modelio._environment_files()
    conda_env, requirements, _ = _process_pip_requirements(None, list(modelio.pip_requirements()), None)
    assert files["requirements.txt"].splitlines() == requirements
    assert yaml.safe_load(files["conda.yaml"]) == conda_env
    assert requirements[0].startswith("mlflow==")


def test_compact_skops_dump_loads_and_lists_exact_trusted_types():
    import skops.io

    X, y = _frame()
    spec = get_model("random_forest")
    pipe = preprocessing.build_pipeline(spec.build({"n_estimators": 3}, seed=0), ["Engine Size(L)"], ["Make"],
                                        False).fit(X, y)
    blob, trusted = modelio.skops_blob(pipe)
    assert trusted == sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipe)))
    assert "sklearn.tree._tree.Tree" in trusted
    loaded = skops.io.loads(blob, trusted=trusted)
    assert np.array_equal(loaded.predict(X), pipe.predict(X))


@pytest.mark.parametrize("model", ["random_forest", "ridge", "hist_gradient_boosting", "knn", "svr"])
def test_cached_trusted_types_equal_skops_own_answer_on_every_call(model: str) -> None:
    import skops.io

    X, y = _frame()
    spec = get_model(model)
    pipe = preprocessing.build_pipeline(spec.build(spec.defaults(), seed=0), ["Engine Size(L)"], ["Make"],
                                        spec.needs_scaling).fit(X, y)
    expected = sorted(skops.io.get_untrusted_types(data=skops.io.dumps(pipe)))
    for _ in range(2):  # the second answer comes from the cache
        blob, trusted = modelio.skops_blob(pipe)
        assert trusted == expected
        assert skops.io.loads(blob, trusted=trusted) is not None


@pytest.mark.integration  # a real MLflow SQLite store: its schema migrations take seconds
def test_experiments_on_another_sqlite_store_keep_artifacts_beside_it(tmp_path, monkeypatch) -> None:
    """MLflow's default would be ./mlruns under whatever directory the process runs in."""
    from mlflow.tracking import MlflowClient

    from mlops_local import tracking
    from mlops_local.settings import Settings

    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}")
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    location = client.get_experiment(tracking.experiment_for(client, settings, "e")).artifact_location
    assert location.startswith((tmp_path / "elsewhere" / "artifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_the_dataset_input_is_built_once_per_dataset_content(monkeypatch):
    from mlops_local.ml import training
    from mlops_local.ml.datasets import load_dataset
    from mlops_local.ml.types import DatasetSpec

    built = []
    real = training._build_dataset_input
    monkeypatch.setattr(training, "_INPUTS", {})
    monkeypatch.setattr(training, "_build_dataset_input", lambda data: built.append(data.name) or real(data))
    small = load_dataset(DatasetSpec("friedman1", options={"n_samples": 120}))
    first = training.dataset_input(small)
    again = training.dataset_input(load_dataset(DatasetSpec("friedman1", options={"n_samples": 120})))
    other = training.dataset_input(load_dataset(DatasetSpec("friedman1", options={"n_samples": 130})))
    assert again is first and other is not first and built == ["friedman1", "friedman1"]
    assert first.dataset.digest == small.fingerprint and first.dataset.name == "friedman1"

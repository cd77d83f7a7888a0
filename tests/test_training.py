"""train() against a real MLflow server: every catalog model, what each run records, reload in a fresh
process, failures leave no RUNNING run, bad input creates no run, server down / unreachable."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.ml import training
from mlops_local.ml.catalog import CATALOG
from mlops_local.ml.plots import PLOT_FILES
from mlops_local.ml.types import STEPS, DatasetSpec, TrainRequest
from mlops_local.settings import Settings
from tests.services import free_port, stack_env
from tests.test_datasets import BAD_CASES, bad_files

pytestmark = pytest.mark.integration

TARGET = "CO2 Emissions(g/km)"
# Small but real: each catalog model trains in well under a second on ~200 rows.
SMALL_PARAMS = {
    "linear_regression": {}, "ridge": {"alpha": 0.5}, "lasso": {"alpha": 0.1, "max_iter": 5000},
    "elastic_net": {"alpha": 0.1, "l1_ratio": 0.3, "max_iter": 5000}, "knn": {"n_neighbors": 4},
    "decision_tree": {"max_depth": 6}, "random_forest": {"n_estimators": 10},
    "extra_trees": {"n_estimators": 10}, "gradient_boosting": {"n_estimators": 20},
    "hist_gradient_boosting": {"max_iter": 20}, "svr": {"C": 100.0},
}


@pytest.fixture(scope="module")
def small_co2(tmp_path_factory: pytest.TempPathFactory, co2_csv: Path) -> Path:
    """240 rows of the real CO2 file with a few missing numbers and categories, as a user file."""
    frame = pd.read_csv(co2_csv).sample(240, random_state=0).reset_index(drop=True)
    frame.loc[[3, 50, 90], "Engine Size(L)"] = np.nan
    frame.loc[[7], "Fuel Type"] = np.nan
    path = tmp_path_factory.mktemp("data") / "co2_small.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def client(mlflow_settings: Settings) -> MlflowClient:
    return MlflowClient(mlflow_settings.effective_tracking_uri)


def _request(path: Path, model: str, experiment: str, **kw: object) -> TrainRequest:
    return TrainRequest(DatasetSpec(str(path), target=TARGET), model, params=SMALL_PARAMS[model],
                        experiment=experiment, **kw)


def _runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_small_params_cover_the_whole_catalog():
    assert set(SMALL_PARAMS) == set(CATALOG)


@pytest.mark.parametrize("model", sorted(SMALL_PARAMS))
def test_each_catalog_model_trains_and_its_run_records_everything(model, small_co2, mlflow_settings, client,
                                                                  tmp_path):
    steps: list[str] = []
    result = training.train(_request(small_co2, model, "it-models", source="ui"), mlflow_settings,
                            progress=lambda step, elapsed: steps.append(step))
    assert steps == [s for s in STEPS if s != "publish"]
    assert set(result.metrics) == {"r2", "rmse", "mae"} and math.isfinite(result.metrics["rmse"])
    assert result.durations["total_s"] >= result.durations["fit_s"] > 0
    assert result.model_uri == f"runs:/{result.run_id}/model"
    assert len(result.y_test) == len(result.y_pred) == 48
    assert result.tracking_uri == mlflow_settings.effective_tracking_uri

    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert (tags["dataset"], tags["model"], tags["source"]) == ("co2_small.csv", model, "ui")
    assert params["model"] == model
    assert set(CATALOG[model].defaults()) <= set(params)  # every hyperparameter, defaults included
    for key, value in SMALL_PARAMS[model].items():
        assert params[key] == str(value)
    assert (params["test_size"], params["seed"], params["cv_folds"]) == ("0.2", "42", "0")
    assert params["n_rows"] == "240"
    assert params["n_features"] == "11" and "prep_categorical" in params and "prep_numeric" in params
    for name in ("r2", "rmse", "mae"):
        assert metrics[name] == pytest.approx(result.metrics[name])
    assert metrics["fit_s"] > 0 and metrics["predict_s"] > 0

    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.digest == params["dataset_fingerprint"] and dataset.name == "co2_small.csv"

    model_files = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert {"model/MLmodel", "model/model.skops", "model/requirements.txt",
            "model/input_example.json"} <= model_files
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {f"plots/{f}" for f in PLOT_FILES}
    local = Path(client.download_artifacts(result.run_id, "model", str(tmp_path)))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert "cloudpickle" not in (local / "requirements.txt").read_text()
    inputs = {c["name"]: c["type"] for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs["Cylinders"] == "any" and inputs["Make"] == "string" and TARGET not in inputs
    hints = mlmodel["metadata"]["mlops_local"]
    assert hints["target"] == TARGET and "Cylinders" in hints["numeric"] and "Make" in hints["categorical"]
    if "tree" in model or "forest" in model or "boosting" in model:
        assert mlmodel["flavors"]["sklearn"]["skops_trusted_types"]


RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np, pandas as pd, mlflow.pyfunc
    rows = pd.read_csv(sys.argv[2]).head(6).drop(columns=[sys.argv[3]])
    rows.loc[0, "Engine Size(L)"] = np.nan
    rows.loc[1, "Make"] = "NEVER-SEEN-MAKE"
    rows.loc[2, "Fuel Consumption City (L/100 km)"] = np.nan
    rows.loc[3, "Fuel Type"] = np.nan
    assert rows["Cylinders"].dtype == "int64"  # as pandas reads the file
    model = mlflow.pyfunc.load_model(sys.argv[1])
    print(json.dumps([float(v) for v in np.asarray(model.predict(rows)).ravel()]))
""")


@pytest.mark.parametrize("model", ["random_forest", "ridge"])
def test_logged_model_reloads_in_a_fresh_process_and_predicts_raw_rows(model, small_co2, co2_csv, mlflow_env,
                                                                       mlflow_settings):
    result = training.train(_request(small_co2, model, "it-reload"), mlflow_settings)
    proc = subprocess.run([sys.executable, "-c", RELOAD, result.model_uri, str(co2_csv), TARGET],
                          env=mlflow_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(predictions) == 6
    assert all(math.isfinite(p) and 50 < p < 600 for p in predictions)  # g/km of real cars


def test_cv_parent_run_extra_tags_and_no_model(small_co2, mlflow_settings, client):
    parent = client.create_run(client.create_experiment("it-parent"))
    request = TrainRequest(DatasetSpec(str(small_co2), target=TARGET), "ridge", cv_folds=3,
                           experiment="it-parent", source="sweep", parent_run_id=parent.info.run_id,
                           log_model=False, extra_tags={"sweep": "s1"})
    result = training.train(request, mlflow_settings)
    client.set_terminated(parent.info.run_id)
    assert result.model_uri is None
    assert {"cv_r2_mean", "cv_r2_std", "cv_rmse_mean", "cv_rmse_std"} <= set(result.metrics)
    run = client.get_run(result.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["sweep"] == "s1" and run.data.tags["source"] == "sweep"
    assert run.data.params["cv_folds"] == "3" and run.data.metrics["cv_rmse_mean"] > 0
    assert client.list_artifacts(result.run_id, "model") == []


def test_builtin_dataset_options_are_recorded(mlflow_settings, client):
    request = TrainRequest(DatasetSpec("friedman1", options={"n_samples": 80, "noise": 0.5}), "ridge",
                           experiment="it-builtin")
    result = training.train(request, mlflow_settings)
    params = client.get_run(result.run_id).data.params
    assert params["dataset_n_samples"] == "80" and params["dataset_source"] == "builtin"
    assert params["dataset_seed"] == "0"  # defaults of the options are recorded too
    assert params["n_rows"] == "80"


BAD_REQUESTS = {
    "unknown_model": ({"model": "xgboost"}, "unknown model 'xgboost'"),
    "param_wrong_type": ({"params": {"n_estimators": "many"}}, "'n_estimators'"),
    "param_out_of_range": ({"params": {"n_estimators": 0}}, "between 1 and 2000"),
    "test_size_zero": ({"test_size": 0.0}, "between 0 and 1"),
    "test_size_one": ({"test_size": 1.0}, "between 0 and 1"),
    "bad_source": ({"source": "cron"}, "source must be one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_refused_before_any_run_exists(case, small_co2, mlflow_settings, client):
    changes, fragment = BAD_REQUESTS[case]
    base = {"dataset": DatasetSpec(str(small_co2), target=TARGET), "model": "random_forest",
            "experiment": "it-bad-requests"}
    with pytest.raises(UserError, match=fragment):
        training.train(TrainRequest(**{**base, **changes}), mlflow_settings)
    assert _runs(client, "it-bad-requests") == []


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_is_refused_before_any_run_exists(case, tmp_path, mlflow_settings, client):
    path, target, fragment = bad_files(tmp_path)[case]
    with pytest.raises(UserError, match=fragment):
        request = TrainRequest(DatasetSpec(str(path), target=target), "ridge", experiment="it-bad-files")
        training.train(request, mlflow_settings)
    assert _runs(client, "it-bad-files") == []


class _Boom(Exception):
    pass


def test_failure_during_fit_marks_the_run_failed_with_the_error(small_co2, mlflow_settings, client,
                                                                 monkeypatch):
    def explode(self, X, y):
        raise _Boom("the estimator blew up")

    monkeypatch.setattr("sklearn.pipeline.Pipeline.fit", explode)
    with pytest.raises(_Boom):
        training.train(_request(small_co2, "ridge", "it-failures"), mlflow_settings)
    runs = _runs(client, "it-failures")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "the estimator blew up" in runs[0].data.tags["error"]


def test_interrupt_while_logging_marks_the_run_killed(small_co2, mlflow_settings, client, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "write_plots", interrupt)  # model upload already queued by then
    with pytest.raises(KeyboardInterrupt):
        training.train(_request(small_co2, "random_forest", "it-interrupt"), mlflow_settings)
    runs = _runs(client, "it-interrupt")
    assert len(runs) == 1 and runs[0].info.status == "KILLED"  # Ctrl-C: stopped, not failed
    assert runs[0].data.tags["error"] == "interrupted"


def test_server_down_writes_to_the_same_local_store(tmp_path):
    settings = Settings.from_env(stack_env(tmp_path / "home"))  # nothing listens on its MLflow port
    result = training.train(TrainRequest(DatasetSpec("diabetes"), "linear_regression",
                                         experiment="offline"), settings)
    assert result.tracking_uri == settings.backend_store_uri
    local = MlflowClient(settings.backend_store_uri)
    run = local.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["rmse"] > 0
    experiment = local.get_experiment(result.experiment_id)
    # same layout as the server's --artifacts-destination, so the server serves these files once started
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")
    root = settings.artifacts_dir / experiment.artifact_location.split(":/", 1)[1]
    folder = root / result.run_id / "artifacts"
    assert (folder / "model" / "MLmodel").is_file() and (folder / "plots" / PLOT_FILES[0]).is_file()


@pytest.mark.timeout(30)
def test_unreachable_configured_server_fails_fast_with_a_clear_message(tmp_path):
    port = free_port()
    settings = Settings.from_env(stack_env(tmp_path / "home", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}"))
    with pytest.raises(ServiceUnavailable, match=f"http://127.0.0.1:{port} is not reachable"):
        training.train(TrainRequest(DatasetSpec("diabetes"), "ridge"), settings)
    assert not settings.mlflow_db.exists()  # no silent fallback to another store

"""AppTest of the Runs page against the real MLflow server: filter, sort, compare, register, errors."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from streamlit.testing.v1 import AppTest

from mlops_local.ml.types import TrainResult
from tests.apptest import open_app

EXPERIMENT = "ui-tests"


def open_runs(experiment: str = EXPERIMENT) -> AppTest:
    at = open_app("runs")
    at.selectbox(key="runs_experiment").set_value(experiment).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def logged_runs(ui_trained_run: TrainResult, mlflow_env: dict[str, str]) -> dict[str, str]:
    """The real training plus two runs logged directly (ridge with a model-less run, a second forest)."""
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    ids = {"trained": ui_trained_run.run_id}
    for name, model, r2, params in (("ridge", "ridge", 0.75, {"alpha": "0.5", "fit_intercept": "True"}),
                                    ("forest", "random_forest", 0.95,
                                     {"n_estimators": "20", "max_depth": "None"})):
        run = client.create_run(ui_trained_run.experiment_id, run_name=f"{model}-co2_canada",
                                tags={"dataset": "co2_canada", "model": model, "source": "cli"})
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id,
                         metrics=[Metric("r2", r2, now, 0), Metric("rmse", 10 * (1 - r2), now, 0),
                                  Metric("mae", 8 * (1 - r2), now, 0)],
                         params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
        ids[name] = run.info.run_id
    return ids


def test_filter_and_sort(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    assert len(at.dataframe) >= 1
    at.selectbox(key="runs_model").set_value("random_forest").run()
    at.selectbox(key="runs_sort").set_value("r2").run()
    assert not at.exception, at.exception
    options = at.multiselect(key="runs_compare").options
    # newest-first is replaced by best R² first; ridge is filtered out
    frame = at.dataframe[0].value
    assert list(frame["model"].unique()) == ["random_forest"]
    assert list(frame["r2"]) == sorted(frame["r2"], reverse=True)
    assert len(options) == len(frame) >= 2
    at.toggle(key="runs_ascending").set_value(True).run()
    assert list(at.dataframe[0].value["r2"]) == sorted(frame["r2"])

    tomorrow = date.today() + timedelta(days=2)
    at.date_input(key="runs_dates").set_value((tomorrow, tomorrow + timedelta(days=1))).run()
    assert not at.exception, at.exception
    assert any("No runs match" in i.value for i in at.info)


def test_compare_shows_bars_params_diff_and_parallel_coordinates(
        ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    at.multiselect(key="runs_compare").set_value([logged_runs["trained"], logged_runs["ridge"]]).run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # metric bars + parallel coordinates
    diff = next(d.value for d in at.dataframe if d.value.index.name == "param")  # dataframes carry no key
    assert "alpha" in diff.index and "n_estimators" in diff.index
    assert "seed" not in diff.index or diff.loc["seed"].nunique() > 1


def test_register_and_alias(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    at.selectbox(key="runs_action_run").set_value(logged_runs["trained"]).run()
    at.text_input(key="runs_register_name").set_value("ui-runs-co2").run()
    at.text_input(key="runs_register_alias").set_value("champion").run()
    at.button(key="runs_register_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "ui-runs-co2@champion" in at.success[0].value
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("ui-runs-co2", "champion")
    assert version.run_id == logged_runs["trained"]


@pytest.mark.parametrize(("run", "alias", "message"), [
    ("trained", "v1", "reserved"),
    ("trained", "bad alias!", "may only contain"),
    ("ridge", "champion", "has no logged model"),
])
def test_register_errors(ui_env: dict[str, str], logged_runs: dict[str, str], run: str, alias: str,
                         message: str) -> None:
    at = open_runs()
    at.selectbox(key="runs_action_run").set_value(logged_runs[run]).run()
    at.text_input(key="runs_register_alias").set_value(alias).run()
    at.button(key="runs_register_button").click().run()
    assert not at.exception, at.exception
    assert at.error and message in at.error[0].value


def test_mlflow_down_is_a_message(ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_local.settings import get_settings
    from tests.services import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    at = open_app("runs")
    assert at.error and "not reachable" in at.error[0].value

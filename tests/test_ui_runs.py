"""AppTest of the Runs page against the real MLflow server: filter, sort, fold sweeps, tick rows to compare
and register, errors."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from streamlit.testing.v1 import AppTest

from mlops_local import runs
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest, TrainResult
from mlops_local.settings import Settings
from mlops_local.sweep.run import run_sweep
from mlops_local.sweep.spec import SweepSpec
from tests.apptest import open_app
from tests.postgres import on_both_stores

EXPERIMENT = "ui-tests"


def open_runs(experiment: str = EXPERIMENT) -> AppTest:
    at = open_app("runs")
    at.selectbox(key="runs_experiment").set_value(experiment).run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, key: str = "runs_table"):
    """The run table with ``key`` as the page shows it (every column, in the frame's order)."""
    return next(d for d in at.dataframe if d.key == key)


def tick(at: AppTest, *run_ids: str, key: str = "runs_table") -> AppTest:
    """Tick the rows of ``run_ids`` in the table (as a click on their checkboxes does) and rerun."""
    ids = list(table(at, key).value["run_id"])
    at.session_state[key] = {"selection": {"rows": [ids.index(r) for r in run_ids]}}
    at.run()
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


@pytest.fixture(scope="module")
def diabetes_run(mlflow_env: dict[str, str]) -> TrainResult:
    """A second real training with a model, on another dataset and model than the forest."""
    from mlops_local.ui import common

    request = TrainRequest(DatasetSpec("diabetes"), "ridge", experiment=EXPERIMENT, source="cli",
                           log_plots=False)
    result = train(request, Settings.from_env(mlflow_env))
    # Trained outside the UI: the pages' cached runs (15 s) would not list it yet in a test that follows
    # one that just read the same experiment.
    common.clear_run_caches()
    return result


@pytest.fixture(scope="module")
def sweep(mlflow_env: dict[str, str], logged_runs: dict[str, str]):
    """A real sweep of 3 ridge trials on diabetes in the same experiment (after the other runs)."""
    spec = SweepSpec(DatasetSpec("diabetes"), "ridge", strategy="random", trials=3, jobs=1, seed=3,
                     experiment=EXPERIMENT, models="none")
    result = run_sweep(spec, Settings.from_env(mlflow_env))
    assert result.status == "FINISHED", result
    # As the Sweep page does when its sweep ends: earlier tests' Runs pages are cached for 15 s, and on
    # a quiet machine they are still fresh here.
    from mlops_local.ui import common

    common.clear_run_caches()
    return result


@on_both_stores
def test_filter_and_sort(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    assert len(at.dataframe) >= 1
    at.selectbox(key="runs_model").set_value("random_forest").run()
    at.selectbox(key="runs_sort").set_value("r2").run()
    assert not at.exception, at.exception
    # newest-first is replaced by best R² first; ridge is filtered out
    frame = table(at).value
    assert list(frame["model"].unique()) == ["random_forest"]
    assert list(frame["r2"]) == sorted(frame["r2"], reverse=True)
    assert len(frame) >= 2
    at.toggle(key="runs_ascending").set_value(True).run()
    assert list(table(at).value["r2"]) == sorted(frame["r2"])

    tomorrow = date.today() + timedelta(days=2)
    at.date_input(key="runs_dates").set_value((tomorrow, tomorrow + timedelta(days=1))).run()
    assert not at.exception, at.exception
    assert any("No runs match" in i.value for i in at.info)


def test_source_filter(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    assert {"ui", "cli"} <= set(table(at).value["source"])
    at.selectbox(key="runs_source").set_value("cli").run()
    assert not at.exception, at.exception
    frame = table(at).value
    assert set(frame["source"]) == {"cli"} and logged_runs["trained"] not in set(frame["run_id"])
    at.selectbox(key="runs_source").set_value("ui").run()
    assert list(table(at).value["run_id"]) == [logged_runs["trained"]]


def test_metric_and_link_columns_come_first(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    order = list(table(at).proto.column_order)
    assert order[:5] == ["run_name", "mlflow", "r2", "rmse", "mae"], order
    assert "run_id" not in order and "parent_run_id" not in order


def test_sweep_folded_under_its_parent(ui_env: dict[str, str], sweep) -> None:
    at = open_runs()
    frame = table(at).value
    trial_ids = {t.run_id for t in sweep.trials}
    assert not trial_ids & set(frame["run_id"])  # folded
    parent = frame.set_index("run_id").loc[sweep.parent_run_id]
    assert parent["trials"] == 3
    assert parent["r2"] == pytest.approx(sweep.best.metrics["r2"])  # the best trial's, not None
    assert parent["rmse"] == pytest.approx(sweep.best.metrics["rmse"])

    # ticking the sweep lists its trials, best first; ticking trials there compares them
    tick(at, sweep.parent_run_id)
    trials = table(at, "runs_trials_table").value
    assert set(trials["run_id"]) == trial_ids
    assert list(trials["r2"]) == sorted(trials["r2"], reverse=True)
    tick(at, *list(trials["run_id"])[:2], key="runs_trials_table")
    assert len(at.get("plotly_chart")) == 2  # compare: metric charts + parallel coordinates

    at.toggle(key="runs_show_trials").set_value(True).run()
    assert not at.exception, at.exception
    assert trial_ids <= set(table(at).value["run_id"])


def test_ticked_sweep_registers_its_best_trial(ui_env: dict[str, str], sweep) -> None:
    at = tick(open_runs(), sweep.parent_run_id)
    assert at.selectbox(key="runs_action_run").value == sweep.best.run_id


def test_ticked_rows_drive_compare(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = open_runs()
    assert not at.get("plotly_chart") and not at.get("multiselect") or \
        all(m.key != "runs_compare" for m in at.multiselect)
    tick(at, logged_runs["trained"], logged_runs["ridge"])
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # metric charts + parallel coordinates
    diff = next(d.value for d in at.dataframe if d.value.index.name == "param")  # dataframes carry no key
    assert "alpha" in diff.index and "n_estimators" in diff.index
    assert "seed" not in diff.index or diff.loc["seed"].nunique() > 1
    # the registration offers the ticked finished runs only
    assert set(at.selectbox(key="runs_action_run").options) == {
        runs.run_label({"run_name": n, "run_id": r}) for n, r in
        ((table(at).value.set_index("run_id").loc[r, "run_name"], r)
         for r in (logged_runs["trained"], logged_runs["ridge"]))}


@on_both_stores
def test_register_and_alias(ui_env: dict[str, str], logged_runs: dict[str, str]) -> None:
    at = tick(open_runs(), logged_runs["trained"])
    at.text_input(key="runs_register_name").set_value("ui-runs-co2").run()
    at.text_input(key="runs_register_alias").set_value("champion").run()
    at.button(key="runs_register_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    assert "No champion yet" in at.success[0].value  # the gate's verdict first: nothing moved yet
    assert not client.search_model_versions("name = 'ui-runs-co2'")
    at.button(key="runs_promote_button").click().run()
    assert not at.exception, at.exception
    assert "ui-runs-co2@champion" in at.success[0].value
    version = client.get_model_version_by_alias("ui-runs-co2", "champion")
    assert version.run_id == logged_runs["trained"]


def test_register_name_follows_the_ticked_run_until_edited(
        ui_env: dict[str, str], logged_runs: dict[str, str], diabetes_run: TrainResult) -> None:
    at = tick(open_runs(), logged_runs["trained"])
    assert at.text_input(key="runs_register_name").value == "co2_canada-random_forest"
    tick(at, diabetes_run.run_id)
    assert at.text_input(key="runs_register_name").value == "diabetes-ridge"
    at.text_input(key="runs_register_name").set_value("my-model").run()
    tick(at, logged_runs["trained"])
    assert at.text_input(key="runs_register_name").value == "my-model"
    tick(at)  # nothing ticked: the field is gone, the typed name is kept
    assert not at.text_input
    tick(at, diabetes_run.run_id)
    assert at.text_input(key="runs_register_name").value == "my-model"
    at.text_input(key="runs_register_name").set_value("").run()  # cleared: it follows the runs again
    assert at.text_input(key="runs_register_name").value == "diabetes-ridge"
    tick(at, logged_runs["trained"])
    assert at.text_input(key="runs_register_name").value == "co2_canada-random_forest"


def test_register_again_names_the_version_and_the_alias_move(
        ui_env: dict[str, str], logged_runs: dict[str, str], diabetes_run: TrainResult) -> None:
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    name = "ui-runs-twice"

    def register(run_id: str, then: str | None = None) -> str:
        """Register, then click ``then`` (a button of the promotion gate's verdict) if given."""
        at = tick(open_runs(), run_id)
        at.text_input(key="runs_register_name").set_value(name).run()
        at.button(key="runs_register_button").click().run()
        if then is not None:
            at.button(key=then).click().run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        return " ".join(m.value for m in [*at.success, *at.info, *at.warning])

    assert "as ui-runs-twice version 1" in register(logged_runs["trained"], "runs_promote_button")
    again = register(logged_runs["trained"])
    assert "already ui-runs-twice version 1" in again and "no new version" in again
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    # A diabetes model cannot be scored against a co2 champion: the gate refuses; forcing moves the alias.
    moved = register(diabetes_run.run_id, "runs_promote_force")
    assert "as ui-runs-twice version 2" in moved and "@champion moved from version 1 to version 2" in moved
    back = register(logged_runs["trained"], "runs_promote_force")
    assert "already ui-runs-twice version 1" in back and "@champion moved from version 2 to version 1" in back
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert client.get_model_version_by_alias(name, "champion").run_id == logged_runs["trained"]


@pytest.mark.parametrize(("run", "alias", "message"), [
    ("trained", "v1", "reserved"),
    ("trained", "bad alias!", "may only contain"),
    ("ridge", "champion", "has no logged model"),
])
def test_register_errors(ui_env: dict[str, str], logged_runs: dict[str, str], run: str, alias: str,
                         message: str) -> None:
    at = tick(open_runs(), logged_runs[run])
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

"""AppTest of the Sweep page against the real MLflow server: a small grid to the end, and Stop."""

from __future__ import annotations

import json
import re
import threading
import time

from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from mlops_local.ml.catalog import DEFAULT_MODEL
from mlops_local.runtime import get_runtime
from mlops_local.sweep.job import SweepJob
from mlops_local.sweep.space import build_space
from tests.apptest import open_app


def open_sweep() -> AppTest:
    return open_app("sweep")


def configure(at: AppTest, model: str, search: str, experiment: str) -> None:
    """friedman1 with 200 rows, one searched hyperparameter of ``model``, the others held."""
    at.selectbox(key="sweep_dataset").set_value("friedman1").run()
    at.number_input(key="train_option_friedman1_n_samples").set_value(200).run()
    at.selectbox(key="sweep_model").set_value(model).run()
    for box in at.checkbox:
        if box.key and box.key.startswith(f"sweep_{model}_") and box.key.endswith("_search"):
            box.set_value(box.key == f"sweep_{model}_{search}_search")
    at.text_input(key="sweep_experiment").set_value(experiment)
    at.run()
    assert not at.exception, at.exception


def wait_done(at: AppTest, timeout: float = 120.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = at.session_state["sweep_job"]
        if job.done:
            at.run()
            return job
        time.sleep(0.5)
        at.run()
    raise TimeoutError("the sweep did not end")


def test_grid_sweep_from_the_page_links_to_its_parent_run(ui_env):
    at = open_sweep()
    configure(at, "ridge", "alpha", "ui-sweep")
    at.radio(key="sweep_strategy").set_value("grid").run()
    at.number_input(key="sweep_grid_points").set_value(3).run()
    at.number_input(key="sweep_ridge_alpha_low").set_value(0.01).run()
    at.number_input(key="sweep_ridge_alpha_high").set_value(100.0).run()
    assert "3 trials" in " ".join(c.value for c in at.caption)
    at.button(key="sweep_start").click().run()
    job = wait_done(at)
    assert not at.exception, at.exception
    assert job.error is None and job.result.status == "FINISHED", [t.error for t in job.result.trials]
    assert [t.params["alpha"] for t in job.result.trials] == [0.01, 1.0, 100.0]
    assert any("Sweep finished" in s.value for s in at.success)
    # the baseline is what a training with the defaults scores on the same data and split: here the
    # trial with alpha 1.0 (the default; the other hyperparameters are held at their defaults)
    default_trial = job.result.trials[1]
    assert job.result.baseline == default_trial.score
    # the live chart: y axis spans the scores (not from 0), the baseline a rule at its value
    [chart] = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert {layer["encoding"]["y"]["scale"]["zero"] for layer in spec["layer"]} == {False}
    rules = [layer for layer in spec["layer"] if layer["mark"]["type"] == "rule"]
    assert [row["value"] for layer in rules for row in layer["data"]["values"]] == [job.result.baseline]
    scores = [row["value"] for layer in spec["layer"] if layer["mark"]["type"] == "circle"
              for row in layer["data"]["values"]]
    assert sorted(scores) == sorted(t.score for t in job.result.trials)
    # the UI process's /metrics counted the trials as they ended
    assert get_runtime().sweeps.trial_counts()["finished"] >= 3
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(job.result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["space.alpha"] == "float 0.01..100 log"
    trials = client.search_runs([parent.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 3


def hold_after_first_trial(monkeypatch) -> threading.Event:
    """Make the sweep wait, once its first trial has ended, until Stop is clicked (or 60 s pass).

    Without this the test races the sweep: on a fast machine every trial can end before the page's
    Stop button is clicked, and the button is gone. The hold is in the UI process's sweep loop (the
    trials themselves are real fits in real worker processes); it returns the event set when the loop
    reached the hold.
    """
    reached = threading.Event()
    original = SweepJob._on_trial

    def held(self: SweepJob, progress: object) -> None:
        original(self, progress)
        reached.set()
        self.cancel.wait(60)

    monkeypatch.setattr(SweepJob, "_on_trial", held)
    return reached


def test_stop_button_cancels_and_nothing_stays_running(ui_env, monkeypatch):
    reached = hold_after_first_trial(monkeypatch)
    at = open_sweep()
    configure(at, "random_forest", "n_estimators", "ui-sweep-stop")
    at.number_input(key="train_option_friedman1_n_samples").set_value(400).run()
    at.number_input(key="sweep_random_forest_n_estimators_low").set_value(150).run()
    at.number_input(key="sweep_random_forest_n_estimators_high").set_value(300).run()
    at.number_input(key="sweep_trials_n").set_value(12).run()
    at.button(key="sweep_start").click().run()
    assert reached.wait(120), "no trial ended"
    at.run()  # the sweep is held after its first trial: Stop is on the page
    assert at.session_state["sweep_job"].running
    at.button(key="sweep_stop").click().run()
    job = wait_done(at)
    assert not at.exception, at.exception
    result = job.result
    assert result.status == "KILLED" and len(result.trials) < 12
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("ui-sweep-stop").experiment_id
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []
    # a user's own Stop reads as stopped, not as a warning
    assert [w.value for w in at.warning] == []
    assert any(i.value.startswith("Sweep stopped: ") for i in at.info), [i.value for i in at.info]
    # every trial whose score reached MLflow keeps it and counts for the best; only the others are KILLED
    runs = {r.info.run_id: r for r in client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")}
    assert runs and sorted(runs) == sorted(t.run_id for t in result.trials if t.run_id)
    for trial in result.trials:
        run = runs[trial.run_id]
        assert (trial.status, trial.score) == (run.info.status, run.data.metrics.get("r2")), trial
        assert trial.status in ("FINISHED", "KILLED")
    finished = [t for t in result.trials if t.status == "FINISHED"]
    assert finished  # at least the trial the sweep was held after
    assert result.best.score == max(t.score for t in finished)
    assert f"{result.best.score:.4f}" in " ".join(m.value for m in at.metric)


def test_page_opens_ready_and_its_errors_name_its_own_controls(ui_env):
    at = open_sweep()
    assert [e.value for e in at.error] == []
    assert at.radio(key="sweep_strategy").value == "random"
    assert not at.button(key="sweep_start").disabled

    # the whole default grid is more than the trials: the message names the page's controls and offers
    # the one change that fixes it
    at.radio(key="sweep_strategy").set_value("grid").run()
    trials = at.number_input(key="sweep_trials_n").value
    total = build_space(DEFAULT_MODEL).grid_size(at.number_input(key="sweep_grid_points").value)
    assert total > trials
    [error] = at.error
    assert f"{total} combinations" in error.value and f"**Trials** ({trials})" in error.value
    assert re.search(r"(^|\s)--\w", error.value) is None, error.value  # no command-line flag
    assert at.button(key="sweep_start").disabled
    at.button(key="sweep_fix_sweep_trials_n").click().run()
    assert at.number_input(key="sweep_trials_n").value == total
    assert [e.value for e in at.error] == [] and not at.button(key="sweep_start").disabled

    # a reversed range names its two fields
    at.number_input(key=f"sweep_{DEFAULT_MODEL}_n_estimators_low").set_value(300).run()
    at.number_input(key=f"sweep_{DEFAULT_MODEL}_n_estimators_high").set_value(100).run()
    [error] = at.error
    assert "**n_estimators from** (300) is above **to** (100)" in error.value

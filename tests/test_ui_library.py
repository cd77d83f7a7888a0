"""The UI's library side without Streamlit: runs tables, predict input checks, training jobs, charts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_local import runs
from mlops_local.errors import UserError
from mlops_local.ml import predict, preprocessing
from mlops_local.ml.catalog import CATALOG
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.settings import Settings
from mlops_local.ui import charts, jobs

# -- runs ------------------------------------------------------------------------------------------

def test_build_filter_quotes_and_dates() -> None:
    since = datetime(2026, 1, 2, tzinfo=UTC)
    text = runs.build_filter(dataset="it's.csv", model="ridge", since=since)
    assert text == ("tags.dataset = \"it's.csv\" and tags.model = 'ridge' and "
                    f"attributes.start_time >= {int(since.timestamp() * 1000)}")
    assert runs.build_filter() == ""
    with pytest.raises(UserError, match="both quote"):
        runs.build_filter(dataset="a'b\"c")


def test_order_clause_and_metric_order() -> None:
    assert runs.order_clause("r2") == ["metrics.`r2` DESC", "attributes.start_time DESC"]
    assert runs.order_clause("start_time", ascending=True) == ["attributes.start_time ASC"]
    assert runs.metric_columns(["zeta", "mae", "r2", "alpha"]) == ["r2", "mae", "alpha", "zeta"]


def test_params_diff_keeps_only_differences() -> None:
    params = {"a": {"alpha": "1", "seed": "42"}, "b": {"alpha": "2", "seed": "42", "extra": "x"}}
    diff = runs.params_diff(params, {"a": "run A", "b": "run B"})
    assert list(diff.index) == ["alpha", "extra"]
    assert diff.loc["extra", "run A"] == ""
    assert list(runs.params_diff(params, {}, only_different=False).index) == ["alpha", "extra", "seed"]


def test_parallel_frame_numbers_and_text() -> None:
    frame = pd.DataFrame({"run_id": ["a", "b"], "dataset": ["d", "d"], "model": ["m", "n"], "r2": [0.5, 0.7]})
    params = {"a": {"alpha": "0.1", "kernel": "rbf"}, "b": {"alpha": "1", "kernel": "linear"}}
    out = runs.parallel_frame(frame, params, ["a", "b"], metrics=("r2",))
    assert out["alpha"].tolist() == [0.1, 1.0]
    assert out["kernel"].tolist() == ["rbf", "linear"]
    fig = charts.parallel_coordinates(out)
    kernel = next(d for d in fig.data[0].dimensions if d.label == "kernel")
    assert list(kernel.ticktext) == ["rbf", "linear"]


def test_parallel_coordinates_only_over_shared_params() -> None:
    frame = pd.DataFrame({"run_id": ["a", "b", "c"], "run_name": ["ridge", "forest", "forest"],
                          "r2": [0.5, 0.7, 0.8], "rmse": [9.0, 7.0, 6.0]})
    params = {"a": {"alpha": "0.1", "seed": "42", "test_size": "0.2"},
              "b": {"n_estimators": "10", "min_samples_leaf_fraction_of_rows": "1", "seed": "42",
                    "test_size": "0.3"},
              "c": {"n_estimators": "50", "min_samples_leaf_fraction_of_rows": "2", "seed": "42",
                    "test_size": "0.2"}}
    out = runs.parallel_frame(frame, params, ["a", "b", "c"])
    # alpha and n_estimators are not every run's; seed is the same everywhere
    assert list(out.columns) == ["run", "test_size", "r2", "rmse"]
    two = runs.parallel_frame(frame, params, ["b", "c"])
    assert list(two.columns) == ["run", "min_samples_leaf_fraction_of_rows", "n_estimators", "test_size",
                                 "r2", "rmse"]
    labels = [d.label for d in charts.parallel_coordinates(two).data[0].dimensions]
    assert max(len(label) for label in labels) <= 18 and labels[1:] == ["n_estimators", "test_size", "r2",
                                                                        "rmse"]


def test_metric_bars_one_chart_per_metric_each_on_its_own_axis() -> None:
    long = pd.DataFrame({"run": ["A", "B"] * 3, "metric": ["r2"] * 2 + ["rmse"] * 2 + ["mae"] * 2,
                         "value": [0.98, 0.99, 25.0, 20.0, 15.0, 12.0]})
    fig = charts.metric_bars(long)
    layout = fig.to_plotly_json()["layout"]
    y_axes = sorted(k for k in layout if k.startswith("yaxis"))
    assert len(y_axes) == 3
    assert all(layout[k].get("matches") is None for k in y_axes)  # R² is not drawn on RMSE's scale
    titles = sorted(a["text"] for a in layout["annotations"])
    assert titles == ["mae", "r2", "rmse"]
    values_per_axis: dict[str, set[float]] = {}
    for trace in fig.data:
        values_per_axis.setdefault(trace.yaxis, set()).update(float(v) for v in trace.y)
    assert sorted(map(sorted, values_per_axis.values())) == [[0.98, 0.99], [12.0, 15.0], [20.0, 25.0]]


@pytest.mark.parametrize(("name", "alias", "message"), [
    ("", None, "name is empty"), ("a/b", None, "must not contain"), ("ok", "latest", "reserved"),
    ("ok", "V3", "reserved"), ("ok", "a b", "may only contain"),
])
def test_registration_names(name: str, alias: str | None, message: str) -> None:
    with pytest.raises(UserError, match=message):
        runs.validate_registration(name, alias)


# -- predict ---------------------------------------------------------------------------------------

def test_model_uri_forms() -> None:
    assert predict.model_uri("co2@champion") == "models:/co2@champion"
    assert predict.model_uri("co2/3") == "models:/co2/3"
    assert predict.model_uri("a" * 32) == f"runs:/{'a' * 32}/model"
    assert predict.model_uri("runs:/x/model") == "runs:/x/model"
    with pytest.raises(UserError, match="not a model reference"):
        predict.model_uri("champion")


FIELDS = [predict.InputField("size", "number", 2.0), predict.InputField("doors", "integer", 4),
          predict.InputField("fuel", "category", "X", ("X", "Z"))]


def test_check_batch_converts_and_reports_extra_columns() -> None:
    frame = pd.DataFrame({"fuel": ["Z", None], "size": ["1.5", ""], "doors": [2, 4], "target": [1, 2]})
    out, extra = predict.check_batch(frame, FIELDS)
    assert extra == ["target"]
    assert list(out.columns) == ["size", "doors", "fuel"]
    assert out["size"].tolist()[0] == 1.5 and np.isnan(out["size"].tolist()[1])
    assert out["doors"].dtype == "int64"
    assert out["fuel"].iloc[0] == "Z" and pd.isna(out["fuel"].iloc[1])


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"size": [1.0]}), "missing column\\(s\\) the model needs: doors, fuel"),
    (pd.DataFrame({"size": [1.0, "big"], "doors": [2, 2], "fuel": ["X", "X"]}),
     "column 'size' must hold numbers; row\\(s\\) 2"),
    (pd.DataFrame({"size": [1.0], "doors": [None], "fuel": ["X"]}), "'doors' needs a whole number"),
    (pd.DataFrame({"size": [], "doors": [], "fuel": []}), "no rows"),
])
def test_check_batch_refuses(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(UserError, match=message):
        predict.check_batch(frame, FIELDS)


def test_training_hints_from_a_fitted_pipeline() -> None:
    X = pd.DataFrame({"size": [1.0, 2.0, 3.0, np.nan, 10.0] * 4, "fuel": ["X", "Z", "X", "X", None] * 4})
    y = np.arange(len(X), dtype=float)
    pipeline = preprocessing.build_pipeline(CATALOG["ridge"].build(), ["size"], ["fuel"], True)
    pipeline.fit(X, y)
    defaults, categories = predict.training_hints(pipeline)
    assert defaults["size"] == 2.5  # the imputer's training median
    assert defaults["fuel"] == "X"
    assert categories == {"fuel": ("X", "Z")}


# -- training jobs -------------------------------------------------------------------------------

def _gated_train(gate: threading.Event):
    def gated(request, settings, *, progress=None, **kwargs):
        def report(step: str, elapsed: float) -> None:
            progress(step, elapsed)
            if step == "fit":
                gate.wait(60)
        return train(request, settings, progress=report, **kwargs)
    return gated


def test_one_job_per_session_even_when_clicked_twice(mlflow_env: dict[str, str]) -> None:
    settings = Settings.from_env(mlflow_env)
    request = TrainRequest(DatasetSpec("diabetes"), "ridge", experiment="ui-jobs", source="ui")
    gate, session, published = threading.Event(), {}, []

    def factory() -> jobs.TrainingJob:
        return jobs.TrainingJob(request=request, settings=settings, train_fn=_gated_train(gate),
                                publish=published.append)

    first, started = jobs.start_job(session, "job", factory)
    assert started
    while not any(step == "fit" for step, _ in first.events):
        assert first.wait(0.05) is False
    second, started_again = jobs.start_job(session, "job", factory)
    assert second is first and not started_again
    assert [s.state for s in first.steps()][:3] == ["done", "done", "running"]
    gate.set()
    assert first.wait(60)
    assert first.error is None and published == [first.result]
    assert [s.state for s in first.steps()] == ["done"] * 6
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("ui-jobs")
    assert len(client.search_runs([exp.experiment_id])) == 1
    third, started = jobs.start_job(session, "job", factory)  # finished: a new click trains again
    assert started and third is not first
    gate.set()
    assert third.wait(60)


def test_failed_training_and_failed_publish(mlflow_env: dict[str, str]) -> None:
    settings = Settings.from_env(mlflow_env)
    bad = TrainRequest(DatasetSpec("diabetes"), "ridge", params={"alpha": -1}, experiment="ui-jobs")
    job = jobs.TrainingJob(request=bad, settings=settings, train_fn=train).start()
    assert job.wait(60)
    assert job.result is None and "alpha" in job.error
    assert job.fraction() < 1.0

    def broken_publish(result: object) -> None:
        raise RuntimeError("registry closed")

    good = TrainRequest(DatasetSpec("diabetes"), "ridge", experiment="ui-jobs")
    job = jobs.TrainingJob(request=good, settings=settings, train_fn=train, publish=broken_publish).start()
    assert job.wait(60)
    assert job.error is None and job.result is not None
    assert "registry closed" in job.warning


def test_background_job_starts_once_and_freezes_its_elapsed_time() -> None:
    from dataclasses import dataclass

    from mlops_local.background import BackgroundJob, start_once

    @dataclass
    class Gated(BackgroundJob):
        gate: threading.Event

        def _run(self) -> None:
            self.gate.wait(30)

    gate, session = threading.Event(), {}
    job, started = start_once(session, "k", Gated, lambda: Gated(gate=gate))
    assert started and job.running and not job.done and job.elapsed() >= 0
    with pytest.raises(RuntimeError, match="already started"):
        job.start()
    assert start_once(session, "k", Gated, lambda: Gated(gate=gate)) == (job, False)
    gate.set()
    assert job.wait(30) and job.done and not job.running
    frozen = job.elapsed()
    assert job.wait(0.05) and job.elapsed() == frozen
    again, started = start_once(session, "k", Gated, lambda: Gated(gate=gate))
    assert started and again is not job and again.wait(30)

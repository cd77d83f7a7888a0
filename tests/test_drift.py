"""Input drift: the training profile (logged by train and by a sweep's best model), the window's
incremental counts and PSI against a direct recomputation, the exported metrics, hot reload, and the
served model's PSI seen through the real Prometheus while `replay` sends unshifted then shifted rows."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry, generate_latest

from mlops_local.metrics.promapi import PrometheusClient
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.profile import (
    PROFILE_ARTIFACT,
    PROFILE_FILE,
    ProfileError,
    Reference,
    build_profile,
    parse_profile,
    read_profile,
)
from mlops_local.ml.types import DatasetSpec
from mlops_local.serving.drift import (
    EPSILON,
    MAX_EXPORTED_FEATURES,
    MIN_ROWS,
    DriftCollector,
    DriftWindow,
    psi,
)
from mlops_local.serving.metrics import DEFAULT_PREDICTION_BUCKETS, ServingMetrics
from mlops_local.serving.replay import parse_shift, replay
from mlops_local.settings import Settings
from tests.services import Service, free_port, start_service, wait_for
from tests.test_serving import train_version, version_served

CO2 = load_dataset(DatasetSpec("co2_canada"))


def co2_reference() -> Reference:
    """A profile of the whole co2_canada table, through JSON as the service reads it."""
    y = CO2.y.to_numpy()
    profile = build_profile(CO2.X, CO2.numeric_features, y, y, CO2.target)
    return parse_profile(json.loads(json.dumps(profile)))


# -- the formula and the window ----------------------------------------------------------------------

def test_psi_matches_the_formula_and_floors_empty_bins() -> None:
    assert psi(np.array([50, 50]), np.array([500, 500])) == 0.0
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi(np.array([1, 3]), np.array([10, 10])) == pytest.approx(expected)
    # an empty bin in the window counts as EPSILON, not as a division by zero
    empty = (EPSILON - 0.5) * np.log(EPSILON / 0.5) + (1 - 0.5) * np.log(1 / 0.5)
    assert psi(np.array([0, 7]), np.array([4, 4])) == pytest.approx(empty)


def direct_counts(window: DriftWindow, rows: pd.DataFrame, predictions: np.ndarray) -> list[np.ndarray]:
    """The O(window) answer: bin the last ``size`` rows from scratch."""
    last, preds = rows.tail(window.size), predictions[-window.size:]
    columns = [last[b.name].to_numpy() if b.name in last.columns else np.full(len(last), np.nan)
               for b in window.binnings[:-1]] + [preds]
    return [np.bincount(b.bins(values), minlength=b.n_bins) for b, values in zip(window.binnings, columns,
                                                                                 strict=True)]


def test_incremental_counts_and_psi_equal_a_recomputation_over_the_window() -> None:
    reference = co2_reference()
    window = DriftWindow(reference, size=300)
    rng = np.random.default_rng(7)
    shifted = CO2.X.assign(**{"Engine Size(L)": CO2.X["Engine Size(L)"] * 1.3})
    sent: list[pd.DataFrame] = []
    predictions: list[np.ndarray] = []
    for step, batch in enumerate([1, 5, 120, 1, 250, 37, 400, 3, 299, 301, 1]):  # some wrap, some overflow
        source = shifted if step % 3 == 2 else CO2.X
        rows = source.iloc[rng.integers(0, len(source), batch)]
        preds = rng.normal(250, 60, batch)
        window.add(rows, preds)
        sent.append(rows)
        predictions.append(preds)
        everything, every_pred = pd.concat(sent), np.concatenate(predictions)
        expected = direct_counts(window, everything, every_pred)
        got = window.counts()
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)), step
        assert window.rows == min(300, len(everything))
        feature_psi, prediction_psi, rows_in = window.psi()
        refs = [np.asarray(c) for _, c in reference.features] + [np.asarray(reference.prediction[1])]
        direct = [psi(e, r) for e, r in zip(expected, refs, strict=True)]
        assert list(feature_psi.values()) == pytest.approx(direct[:-1]) and prediction_psi == pytest.approx(
            direct[-1]) and rows_in == window.rows


def test_a_left_out_column_and_text_in_a_numeric_one_count_as_gaps() -> None:
    window = DriftWindow(co2_reference(), size=10)
    rows = CO2.X.head(4).drop(columns=["Fuel Type"]).astype({"Cylinders": object})
    rows.loc[rows.index[0], "Cylinders"] = "many"
    window.add(rows, None)
    counts = dict(zip(window.features + ["prediction"], window.counts(), strict=True))
    assert counts["Fuel Type"][-1] == 4 and counts["prediction"][-1] == 4  # "other" / gap bins
    assert counts["Cylinders"][-1] == 1 and counts["Cylinders"].sum() == 4


def test_unshifted_rows_stay_low_and_a_shifted_column_stands_out() -> None:
    rng = np.random.default_rng(1)
    cases = [(None, None), ("Engine Size(L)=*1.3", "Engine Size(L)"), ("Fuel Type=E", "Fuel Type")]
    for shift, column in cases:
        window = DriftWindow(co2_reference(), size=1000)
        rows = CO2.X if shift is None else parse_shift(shift).apply(CO2.X)
        picks = rng.permutation(len(rows))[:1000]
        window.add(rows.iloc[picks], CO2.y.to_numpy()[picks])
        feature_psi, prediction_psi, _ = window.psi()
        top = max(feature_psi, key=feature_psi.get)
        if column is None:
            assert max(feature_psi.values()) < 0.1 and prediction_psi < 0.1, feature_psi
        else:
            assert top == column and feature_psi[column] > 0.25, feature_psi
            assert sorted(feature_psi.values())[-2] < 0.1


# -- the profile file --------------------------------------------------------------------------------

def test_profile_bins_and_counts_describe_the_training_rows(tmp_path: Path) -> None:
    y = CO2.y.to_numpy()
    profile = build_profile(CO2.X, CO2.numeric_features, y, y * 2, CO2.target)
    engine = profile["features"]["Engine Size(L)"]
    assert engine["kind"] == "numeric" and len(engine["edges"]) <= 9 and sum(engine["counts"]) == len(CO2.X)
    np.testing.assert_allclose(engine["edges"], np.unique(np.quantile(CO2.X["Engine Size(L)"],
                                                                       np.linspace(0.1, 0.9, 9))))
    model = profile["features"]["Model"]  # 2,000+ models: the 20 most frequent and "other"
    assert model["kind"] == "categorical" and len(model["categories"]) == 20
    top = CO2.X["Model"].value_counts()
    assert model["counts"][0] == top.iloc[0] and model["counts"][-1] == len(CO2.X) - top.iloc[:20].sum()
    assert profile["target"]["name"] == CO2.target and sum(profile["target"]["counts"]) == len(y)
    deciles = np.unique(np.quantile(y * 2, np.linspace(0.1, 0.9, 9)))
    assert profile["prediction"]["edges"] == pytest.approx(deciles)
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(profile))
    loaded = read_profile(path)
    assert [b.name for b, _ in loaded.features] == CO2.features and loaded.rows == len(CO2.X)


NUMERIC = {"kind": "numeric", "edges": [1], "counts": [1, 1, 1]}


@pytest.mark.parametrize(("document", "word"), [
    ([1, 2], "format-1"),
    ({"format": 1, "rows": 5, "features": {"a": {"kind": "pickle", "counts": []}}}, "kind must be"),
    ({"format": 1, "rows": 5, "features": {"a": {**NUMERIC, "edges": [2, 1], "counts": [1, 1, 1, 1]}}},
     "increasing"),
    ({"format": 1, "rows": 5, "features": {"a": {**NUMERIC, "counts": [5]}}}, "3 non-negative integers"),
    ({"format": 1, "rows": 5, "features": {"a": {**NUMERIC, "counts": [1, -1, 1]}}}, "non-negative"),
    ({"format": 1, "rows": 5, "features": {"a": {"kind": "categorical", "categories": [1], "counts": [1]}}},
     "strings"),
    ({"format": 1, "rows": 5, "features": {"a": NUMERIC}, "prediction": None},
     "'prediction' is not an object"),
    ({"format": 1, "rows": 0, "features": {}}, "rows"),
])
def test_a_malformed_profile_is_refused_with_what_is_wrong(document: object, word: str) -> None:
    with pytest.raises(ProfileError, match=word):
        parse_profile(document)


# -- exported metrics and hot reload -------------------------------------------------------------------

def exposition(window: DriftWindow | None, model: str = "m",
               max_features: int = MAX_EXPORTED_FEATURES) -> str:
    registry = CollectorRegistry()
    registry.register(DriftCollector(lambda: (model, window), max_features))
    return generate_latest(registry).decode()


def test_wide_models_export_their_top_features_and_say_how_many_there_are() -> None:
    wide = pd.DataFrame({f"x{i:02d}": np.random.default_rng(i).normal(size=500) for i in range(60)})
    preds = np.zeros(500)
    reference = parse_profile(build_profile(wide, list(wide.columns), preds, preds, "y"))
    window = DriftWindow(reference, size=500)
    window.add(wide.assign(x07=wide["x07"] + 3, x42=wide["x42"] * 4), preds)
    text = exposition(window)
    lines = [line for line in text.splitlines() if line.startswith("mlops_feature_drift_psi{")]
    assert len(lines) == MAX_EXPORTED_FEATURES
    assert 'feature="x07"' in lines[0] or 'feature="x07"' in lines[1]
    assert any('feature="x42"' in line for line in lines[:2])
    assert 'mlops_drift_features{model="m"} 60.0' in text
    assert 'mlops_drift_window_rows{model="m"} 500.0' in text


def test_psi_waits_for_enough_rows_and_nothing_is_exported_without_a_profile() -> None:
    window = DriftWindow(co2_reference(), size=1000)
    window.add(CO2.X.head(MIN_ROWS - 1), None)
    text = exposition(window)
    assert "mlops_feature_drift_psi{" not in text and "mlops_prediction_drift_psi{" not in text
    assert f'mlops_drift_window_rows{{model="m"}} {MIN_ROWS - 1}.0' in text
    window.add(CO2.X.iloc[[MIN_ROWS]], None)
    assert "mlops_feature_drift_psi{" in exposition(window)
    assert "mlops_drift" not in exposition(None) and "mlops_feature_drift" not in exposition(None)


class MovingRegistry:
    """The registry call the holder makes for a named model: where the alias points now."""

    def __init__(self) -> None:
        self.version = "1"

    def get_model_version_by_alias(self, name: str, alias: str) -> object:
        return type("Version", (), {"version": self.version})()


def test_hot_reload_starts_an_empty_window_on_the_new_versions_profile(
        caplog: pytest.LogCaptureFixture) -> None:
    from mlops_local.serving.holder import LoadedModel, ModelHolder

    reference = co2_reference()
    registry = MovingRegistry()

    def loader(_client: object, name: str, alias: str, version: str) -> LoadedModel:
        return LoadedModel(name, alias, version, "run", 1.0, object(), None, DEFAULT_PREDICTION_BUCKETS,
                           "defaults", reference=reference if version != "3" else None)

    caplog.set_level(logging.INFO, logger="mlops_local.serving.holder")
    holder = ModelHolder(registry, ServingMetrics(), "m", "champion", 1.0, loader=loader, drift_window=200)
    assert holder.check()
    first = holder.current.drift
    first.add(CO2.X.head(50), None)
    registry.version = "2"
    assert holder.check()
    assert holder.current.drift is not first and holder.current.drift.rows == 0 and first.rows == 50
    assert holder.current.drift.size == 200
    registry.version = "3"  # a run logged before profiles: served, no drift
    assert holder.check() and holder.current.version == "3" and holder.current.drift is None
    assert "drift: 11 feature(s)" in caplog.text
    off = ModelHolder(MovingRegistry(), ServingMetrics(), "m", "champion", 1.0, loader=loader, drift_window=0)
    assert off.check() and off.current.drift is None  # MLOPS_DRIFT_WINDOW=0: drift off


# -- profiles logged with models ---------------------------------------------------------------------

@pytest.mark.integration
def test_runs_without_or_with_a_broken_profile_serve_without_drift(mlflow_env: dict[str, str],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from mlops_local.serving.holder import reference_profile

    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("serving-tests") or client.create_experiment("drift-old-runs")
    experiment_id = experiment if isinstance(experiment, str) else experiment.experiment_id
    caplog.set_level(logging.INFO, logger="mlops_local.serving.holder")
    old = client.create_run(experiment_id, run_name="before-profiles").info.run_id
    assert reference_profile(client, old) is None
    assert f"run {old} has no reference profile" in caplog.text
    broken = client.create_run(experiment_id, run_name="broken-profile").info.run_id
    client.log_text(broken, '{"format": 1, "rows": 3, "features": {"a": {"kind": "numeric"}}}',
                    f"{PROFILE_ARTIFACT}/{PROFILE_FILE}")
    assert reference_profile(client, broken) is None
    assert f"run {broken}: profile/reference.json is not usable" in caplog.text
    for run_id in (old, broken):
        client.set_terminated(run_id, "FINISHED")


@pytest.mark.integration
def test_a_sweeps_best_model_carries_its_profile(mlflow_settings: Settings) -> None:
    from mlops_local.sweep.run import run_sweep
    from mlops_local.sweep.spec import SweepSpec

    spec = SweepSpec(DatasetSpec("friedman1", options={"n_samples": 200}), "ridge", strategy="random",
                     trials=2, seed=4, jobs=1, experiment="drift-sweep", models="best")
    result = run_sweep(spec, mlflow_settings)
    assert result.status == "FINISHED" and result.best is not None
    path = mlflow.artifacts.download_artifacts(run_id=result.best.run_id,
                                               artifact_path=f"{PROFILE_ARTIFACT}/{PROFILE_FILE}",
                                               tracking_uri=mlflow_settings.effective_tracking_uri)
    reference = read_profile(Path(path))
    assert len(reference.features) == 10 and reference.rows == 160  # friedman1: 10 features, 80 % of 200
    assert sum(reference.prediction[1]) == 160


# -- the real service, the real Prometheus ----------------------------------------------------------

@dataclass
class Watched:
    service: Service
    prometheus: PrometheusClient
    model: str
    url: str


@pytest.fixture(scope="module")
def watched(mlflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """`serve model` with a freshly trained model (default drift window), scraped every second."""
    home = tmp_path_factory.mktemp("drift-home")
    alias = f"drift-{uuid.uuid4().hex[:8]}"
    env = dict(mlflow_env, MLOPS_SERVE_PORT=str(free_port()), MLOPS_SERVE_ALIAS=alias, MLOPS_HOME=str(home),
               MLOPS_SERVE_POLL_INTERVAL="0.5", MLOPS_PROMETHEUS_PORT=str(free_port()),
               MLOPS_SCRAPE_INTERVAL="1")
    env.pop("MLOPS_DRIFT_WINDOW", None)
    started = []
    try:
        started.append(start_service("model", env, home / "logs"))
        started.append(start_service("prometheus", env, home / "logs"))
        client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
        name = f"drift-model-{uuid.uuid4().hex[:6]}"
        version, run_id = train_version(env, client, name, alias, trees=10)
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=f"{PROFILE_ARTIFACT}/{PROFILE_FILE}",
                                                   tracking_uri=client.tracking_uri)
        assert read_profile(Path(path)).rows == int(client.get_run(run_id).data.params["n_train"])
        url = started[0].url
        wait_for(lambda: version_served(url) == version, "the service taking the model")
        prometheus = PrometheusClient.from_settings(Settings.from_env(env))
        rows = f'mlops_drift_window_rows{{model="{name}"}}'
        wait_for(lambda: [s.value for s in prometheus.query(rows)] == [0.0],
                 "Prometheus scraping the empty drift window")
        yield Watched(started[0], prometheus, name, url)
    finally:
        for service in reversed(started):
            service.stop()


def values(prometheus: PrometheusClient, expr: str, at: float | None = None) -> dict[str, float]:
    return {s.labels.get("feature", ""): s.value for s in prometheus.query(expr, at=at)}


def replay_rows(url: str, rows: int, seed: int, shifts: tuple = ()) -> object:
    """``replay`` until at least ``rows`` rows were scored (however slow the machine is), then stop."""
    enough = threading.Event()

    def watch(progress: object) -> None:
        if progress.rows >= rows:
            enough.set()

    result = replay(url, CO2.X, rate=25, duration_s=300, batch=25, seed=seed, shifts=shifts, stop=enough,
                    on_progress=watch)
    assert result.failed == 0 and result.rows >= rows, result
    return result


@pytest.mark.integration
def test_psi_through_prometheus_stays_low_unshifted_and_rises_for_a_shifted_feature(watched: Watched) -> None:
    prom, model = watched.prometheus, watched.model
    unshifted = replay_rows(watched.url, 1000, seed=3)
    wait_for(lambda: values(prom, f'mlops_drift_window_rows{{model="{model}"}}') == {"": 1000.0}
             and values(prom, f'sum(mlops_serving_requests_total{{model="{model}",status="ok"}})')
             == {"": float(unshifted.ok)}, "the unshifted window and every request in Prometheus")
    features = values(prom, f'mlops_feature_drift_psi{{model="{model}"}}')
    assert set(features) == set(CO2.features) and max(features.values()) < 0.1, features
    assert values(prom, f'mlops_prediction_drift_psi{{model="{model}"}}')[""] < 0.1

    replay_rows(watched.url, 1000, seed=4, shifts=(parse_shift("Engine Size(L)=*1.3"),))
    sent_at = time.time()
    interval = 1.0  # MLOPS_SCRAPE_INTERVAL of the fixture
    three_scrapes = sent_at + 3 * interval

    def scraped_after(moment: float) -> bool:
        stamps = prom.query(f'timestamp(mlops_drift_window_rows{{model="{model}"}})')
        return any(s.value > moment for s in stamps)

    wait_for(lambda: scraped_after(three_scrapes), "Prometheus scraping past three intervals")
    at_third = values(prom, f'mlops_feature_drift_psi{{model="{model}"}}', at=three_scrapes)
    assert at_third["Engine Size(L)"] > 0.25, at_third
    assert max(at_third, key=at_third.get) == "Engine Size(L)"
    assert sorted(at_third.values())[-2] < 0.1, at_third  # the other columns did not move


def test_a_profile_survives_a_window_of_one() -> None:
    """MLOPS_DRIFT_WINDOW=1 is allowed: every row replaces the last; PSI is exported from the first row."""
    window = DriftWindow(replace(co2_reference()), size=1)
    window.add(CO2.X.head(3), np.array([1.0, 2.0, 3.0]))
    assert window.rows == 1 and sum(c.sum() for c in window.counts()) == len(window.binnings)
    assert "mlops_feature_drift_psi{" in exposition(window)

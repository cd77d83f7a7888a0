"""The sync from a real MLflow server: full read, increments, dedupe with observe(), caps, outages."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.registry import build_registry
from mlops_local.metrics.sync import MlflowSync
from mlops_local.ml.types import TrainResult
from mlops_local.runmeta import TAG_CLIENT, TAG_SOURCE
from mlops_local.runtime import ensure_runtime, get_runtime, shutdown_runtime
from mlops_local.settings import Settings
from tests.services import stack_env, start_service

MODEL_FAMILIES = ("mlops_model_r2", "mlops_model_rmse", "mlops_model_mae")


@dataclass(frozen=True)
class RunSpec:
    """A run as the training engine logs it (tags dataset/model/source, metrics r2/rmse/mae/fit_s)."""

    dataset: str
    model: str
    r2: float
    end_ms: int
    status: str = "FINISHED"
    fit_s: float = 0.2
    conventional: bool = True  # False: no dataset/model tags (a notebook's scratch run)
    tags: tuple[tuple[str, str], ...] = ()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_experiment(client: MlflowClient, prefix: str = "exporter") -> tuple[str, str]:
    """(name, id) of a fresh experiment, so tests sharing the session server never see each other."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return name, client.create_experiment(name)


def log_run(client: MlflowClient, experiment_id: str, spec: RunSpec) -> str:
    """Create, fill and terminate one run through the tracking API; returns its id."""
    tags = {"dataset": spec.dataset, "model": spec.model, "source": "cli"} if spec.conventional else {}
    tags.update(spec.tags)
    run = client.create_run(experiment_id, start_time=spec.end_ms - 1000, tags=tags)
    run_id = run.info.run_id
    metrics = {"r2": spec.r2, "rmse": 2.0 - spec.r2, "mae": 1.5 - spec.r2, "fit_s": spec.fit_s}
    client.log_batch(run_id, metrics=[Metric(k, v, spec.end_ms, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, spec.status, end_time=spec.end_ms)
    return run_id


def log_runs(client: MlflowClient, experiment_id: str, specs: Iterable[RunSpec],
             workers: int = 4) -> list[str]:
    """Many runs, a few requests in parallel (the server is SQLite-backed: more threads do not help)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda spec: log_run(client, experiment_id, spec), specs))


def train_result(client: MlflowClient, run_id: str) -> TrainResult:
    """The TrainResult the engine would have returned for a run (what the UI passes to observe())."""
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    return TrainResult(
        run_id=run_id, experiment_id=run.info.experiment_id, experiment=experiment.name,
        dataset=run.data.tags["dataset"], model=run.data.tags["model"], params={},
        metrics={k: run.data.metrics[k] for k in ("r2", "rmse", "mae")},
        durations={"fit_s": run.data.metrics["fit_s"]}, model_uri=None, tracking_uri=client.tracking_uri,
        finished_at=run.info.end_time / 1000, status=run.info.status,
        source=run.data.tags.get(TAG_SOURCE, ""), client=run.data.tags.get(TAG_CLIENT, ""))


def model_samples(registry, skip: tuple[str, ...] = ("mlops_sync_", "mlops_series_evicted")) -> dict:
    """{(sample name, labels): value} of every mlops_* sample except the sync's own health."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.startswith("mlops_") and not sample.name.startswith(skip) \
                    and not sample.name.startswith("mlops_build"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def by_name(samples: dict, name: str) -> dict:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def wait_for(check: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def client(mlflow_settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_settings.effective_tracking_uri)


@pytest.fixture(scope="module")
def thousand_runs(client: MlflowClient) -> tuple[str, list[RunSpec]]:
    """1,000 finished runs over 100 {dataset, model} keys, one second apart, ending ~20 minutes ago."""
    name, experiment_id = new_experiment(client, "thousand")
    base = now_ms() - 1_200_000
    specs = [RunSpec(f"ds{i % 50}", f"m{i % 4}", round(i / 1000, 6), base + 1000 * i) for i in range(1000)]
    log_runs(client, experiment_id, specs)
    return name, specs


@pytest.mark.integration
def test_thousand_runs_stay_bounded_and_the_next_sync_reads_only_new_runs(client, mlflow_settings,
                                                                          thousand_runs):
    name, specs = thousand_runs
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, mlflow_settings, max_series=25)
    sync = MlflowSync(client, exporter, experiments=[name], overlap_s=0)

    first = sync.sync_once()
    assert (first.kind, first.fetched, first.new, first.pages) == ("full", 1000, 1000, 2)
    samples = model_samples(registry)
    for family in (*MODEL_FAMILIES, "mlops_best_r2", "mlops_last_training_timestamp_seconds",
                   "mlops_training_runs_total"):
        assert 0 < len(by_name(samples, family)) <= 25, family
    # The 25 keys kept are those trained most recently, with their latest values.
    expected = {(("dataset", s.dataset), ("experiment", name), ("model", s.model)): s.r2 for s in specs[-25:]}
    assert by_name(samples, "mlops_model_r2") == expected
    assert exporter.stats.runs_read == 1000
    assert exporter.stats.bootstrapped

    late = now_ms()
    fresh = [RunSpec("ds0", "m0", 0.99, late), RunSpec("fresh", "m9", 0.5, late + 1),
             RunSpec("fresh", "m9", 0.6, late + 2, status="FAILED")]
    log_runs(client, client.get_experiment_by_name(name).experiment_id, fresh)
    second = sync.sync_once()
    assert (second.kind, second.fetched, second.new) == ("incremental", 3, 3)
    third = sync.sync_once()
    assert (third.fetched, third.new) == (0, 0)
    assert exporter.stats.runs_read == 1003
    r2 = by_name(model_samples(registry), "mlops_model_r2")
    assert r2[(("dataset", "ds0"), ("experiment", name), ("model", "m0"))] == 0.99
    assert r2[(("dataset", "fresh"), ("experiment", name), ("model", "m9"))] == 0.5  # FAILED: no gauge
    assert len(r2) == 25

    # A restarted process (fresh exporter, nothing on disk) gets every count back in one full read.
    restarted = build_registry()
    again = ModelMetricsExporter(restarted, mlflow_settings)
    result = MlflowSync(client, again, experiments=[name]).sync_once()
    assert result.fetched == 1003
    runs = by_name(model_samples(restarted), "mlops_training_runs_total")
    assert sum(runs.values()) == 1003
    assert runs[(("dataset", "fresh"), ("model", "m9"), ("status", "failed"))] == 1
    assert len(by_name(model_samples(restarted), "mlops_model_r2")) == 101


@pytest.mark.integration
def test_a_run_published_by_observe_and_read_by_the_sync_is_counted_once(client, mlflow_settings):
    name, experiment_id = new_experiment(client)
    t = now_ms()
    ids = log_runs(client, experiment_id, [RunSpec("co2_canada", "random_forest", 0.8, t, fit_s=1.2),
                                           RunSpec("co2_canada", "random_forest", 0.9, t + 400, fit_s=0.7),
                                           RunSpec("co2_canada", "ridge", 0.0, t + 500, status="FAILED")])
    ui_registry = build_registry()
    ui = ModelMetricsExporter(ui_registry, mlflow_settings)
    for run_id in ids[:2]:  # the UI published its own two trainings at once
        ui.observe(train_result(client, run_id))
    key = (("dataset", "co2_canada"), ("model", "random_forest"), ("status", "finished"))
    assert by_name(model_samples(ui_registry), "mlops_training_runs_total")[key] == 2
    assert MlflowSync(client, ui, experiments=[name]).sync_once().new == 1  # only the failed one is new

    other_registry = build_registry()  # another process that only syncs
    other = ModelMetricsExporter(other_registry, mlflow_settings)
    MlflowSync(client, other, experiments=[name]).sync_once()
    ui_samples, other_samples = model_samples(ui_registry), model_samples(other_registry)
    assert ui_samples == other_samples
    assert by_name(ui_samples, "mlops_training_runs_total")[key] == 2
    assert by_name(ui_samples, "mlops_training_duration_seconds_count") == {(("model", "random_forest"),): 2}
    assert list(by_name(ui_samples, "mlops_model_r2").values()) == [0.9]


@pytest.mark.integration
def test_a_run_recorded_late_inside_the_overlap_is_picked_up_once(client, mlflow_settings):
    name, experiment_id = new_experiment(client)
    t = now_ms()
    log_run(client, experiment_id, RunSpec("diabetes", "ridge", 0.4, t))
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, mlflow_settings)
    sync = MlflowSync(client, exporter, experiments=[name], overlap_s=5)
    sync.sync_once()
    assert sync.watermark_ms == t
    # Its end time is before the watermark (another client's clock, or a slow request) but inside the overlap.
    log_run(client, experiment_id, RunSpec("diabetes", "lasso", 0.3, t - 2000))
    assert sync.sync_once().new == 1
    assert sync.sync_once().new == 0
    runs = by_name(model_samples(registry), "mlops_training_runs_total")
    assert sorted(runs.values()) == [1, 1]


@pytest.mark.integration
def test_only_finished_or_failed_runs_that_follow_the_conventions_count(client, mlflow_settings):
    name, experiment_id = new_experiment(client)
    t = now_ms()
    log_run(client, experiment_id, RunSpec("friedman1", "knn", 0.7, t))
    log_run(client, experiment_id, RunSpec("friedman1", "knn", 0.1, t + 1, status="FAILED"))
    log_run(client, experiment_id, RunSpec("x", "y", 0.5, t + 2, conventional=False))
    log_run(client, experiment_id, RunSpec("friedman1", "knn", 0.2, t + 3, status="KILLED"))
    client.create_run(experiment_id, tags={"dataset": "friedman1", "model": "svr"})  # still RUNNING
    log_run(client, experiment_id, RunSpec("friedman1", "knn", 0.9, t + 4,  # a sweep's summary run
                                           tags=(("source", "sweep"), ("sweep_role", "parent"))))
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, mlflow_settings)
    pages: list[list[str]] = []
    exporter.add_run_listener(lambda runs, names: pages.append([r.info.run_id for r in runs]))
    exporter.add_run_listener(lambda runs, names: 1 / 0)  # a broken consumer must not break the sync
    MlflowSync(client, exporter, experiments=[name]).sync_once()
    assert len(pages) == 1 and len(pages[0]) == 5  # every terminated run, as read (RUNNING excluded)
    samples = model_samples(registry)
    assert by_name(samples, "mlops_training_runs_total") == {
        (("dataset", "friedman1"), ("model", "knn"), ("status", "finished")): 1,
        (("dataset", "friedman1"), ("model", "knn"), ("status", "failed")): 1,
    }
    assert list(by_name(samples, "mlops_model_r2").values()) == [0.7]


@pytest.mark.integration
def test_a_finished_run_with_tags_but_no_scores_is_not_a_training(client, mlflow_settings):
    name, experiment_id = new_experiment(client)
    t = now_ms()
    log_run(client, experiment_id, RunSpec("diabetes", "ridge", 0.4, t))
    for status in ("FINISHED", "FAILED"):  # tagged like a training, no metrics at all
        bare = client.create_run(experiment_id, start_time=t, tags={"dataset": "diabetes", "model": "ridge"})
        client.set_terminated(bare.info.run_id, status, end_time=t + 1)
    only_fit = client.create_run(experiment_id, start_time=t, tags={"dataset": "diabetes", "model": "ridge"})
    client.log_batch(only_fit.info.run_id, metrics=[Metric("fit_s", 0.1, t + 2, 0)])  # no score
    client.set_terminated(only_fit.info.run_id, "FINISHED", end_time=t + 2)
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, mlflow_settings)
    MlflowSync(client, exporter, experiments=[name]).sync_once()
    samples = model_samples(registry)
    assert by_name(samples, "mlops_training_runs_total") == {
        (("dataset", "diabetes"), ("model", "ridge"), ("status", "finished")): 1,
        (("dataset", "diabetes"), ("model", "ridge"), ("status", "failed")): 1,  # a failure has no scores
    }
    assert by_name(samples, "mlops_training_duration_seconds_count") == {(("model", "ridge"),): 1}
    assert list(by_name(samples, "mlops_last_training_timestamp_seconds").values()) == [t / 1000]


@pytest.mark.integration
def test_a_sweeps_trials_are_counted_and_the_latest_gauges_follow_trainings_only(client, mlflow_settings):
    """mlops_model_r2/rmse/mae are the latest training's (UI, CLI, notebook): a sweep, running or ended,
    never moves them (its best is mlops_sweep_best_score). Otherwise a sweep whose best trial is worse
    than the last training reads as a regression on Monitoring."""
    name, experiment_id = new_experiment(client)
    t = now_ms()
    training = log_run(client, experiment_id, RunSpec("friedman1", "knn", 0.6, t))  # before the sweep
    trial = (("source", "sweep"), ("sweep_role", "trial"))
    ids = [log_run(client, experiment_id, RunSpec("friedman1", "knn", r2, t + 10 + i, tags=trial))
           for i, r2 in enumerate((0.5, 0.55, 0.3))]
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, mlflow_settings)
    sync = MlflowSync(client, exporter, experiments=[name])
    sync.sync_once()
    samples = model_samples(registry)
    assert list(by_name(samples, "mlops_training_runs_total").values()) == [4]  # the trials are trainings
    assert list(by_name(samples, "mlops_model_r2").values()) == [0.6]  # the sweep is still running
    assert list(by_name(samples, "mlops_best_r2").values()) == [0.6]
    assert list(by_name(samples, "mlops_last_training_timestamp_seconds").values()) == [(t + 12) / 1000]

    parent = client.create_run(experiment_id, start_time=t, tags={
        "dataset": "friedman1", "model": "knn", "source": "sweep", "sweep_role": "parent",
        "best_run_id": ids[1]}).info.run_id
    best = {"best_r2": 0.55, "best_rmse": 1.05, "best_mae": 0.55, "trials_done": 3}
    client.log_batch(parent, metrics=[Metric(k, v, t + 20, 0) for k, v in best.items()])
    client.set_terminated(parent, "FINISHED", end_time=t + 20)
    sync.sync_once()
    samples = model_samples(registry)
    assert list(by_name(samples, "mlops_training_runs_total").values()) == [4]  # the summary is not one
    assert list(by_name(samples, "mlops_model_r2").values()) == [0.6]  # the sweep ended: still the training
    assert list(by_name(samples, "mlops_model_rmse").values()) == [pytest.approx(2.0 - 0.6)]
    assert list(by_name(samples, "mlops_model_mae").values()) == [pytest.approx(1.5 - 0.6)]
    info = [labels for (sample, labels) in samples if sample == "mlops_last_run_info"]
    assert ("run_id", training) in info[0]  # the training the values are of

    after = log_run(client, experiment_id, RunSpec("friedman1", "knn", 0.7, t + 30))  # a later training
    sync.sync_once()
    samples = model_samples(registry)
    assert list(by_name(samples, "mlops_model_r2").values()) == [0.7]
    info = [labels for (sample, labels) in samples if sample == "mlops_last_run_info"]
    assert ("run_id", after) in info[0]


def _sync_attempts_logged(caplog: pytest.LogCaptureFixture) -> int:
    """Failed sync attempts so far: each one logs a line (at debug level at least)."""
    return sum(r.name == "mlops_local.metrics.sync" for r in caplog.records)


@pytest.mark.integration
def test_runtime_sync_rides_out_a_server_that_is_down_then_comes_up(tmp_path: Path, caplog):
    """As under honcho, the UI's sync starts before MLflow listens: that is waiting, not an error;
    once MLflow answered, losing it is."""
    caplog.set_level(logging.DEBUG, logger="mlops_local.metrics.sync")
    env = stack_env(tmp_path / "home")
    settings = Settings.from_env(env)  # tracking URI: the local server, not started yet
    shutdown_runtime()
    runtime = ensure_runtime(settings)
    service = None
    try:
        exporter = runtime.exporter
        wait_for(lambda: _sync_attempts_logged(caplog) >= 3, "three syncs refused while MLflow is not up")
        with urllib.request.urlopen(runtime.metrics_server.url, timeout=10) as resp:
            body = resp.read().decode()
        assert "mlops_sync_errors_total 0.0" in body, "MLflow still starting counted as an error"
        assert any("not up yet" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
        assert "mlops_training_runs_total" not in body  # counts unknown until MLflow answered once

        service = start_service("mlflow", env, tmp_path / "logs")
        client = MlflowClient(tracking_uri=settings.effective_tracking_uri)
        name, experiment_id = new_experiment(client)
        log_run(client, experiment_id, RunSpec("co2_canada", "random_forest", 0.87, now_ms()))
        record = wait_for(lambda: exporter.latest(name, "co2_canada", "random_forest"),
                          "the run on the exporter", timeout=120)
        assert record.r2 == 0.87
        assert exporter.stats.bootstrapped
        with urllib.request.urlopen(runtime.metrics_server.url, timeout=10) as resp:
            assert "mlops_training_runs_total" in resp.read().decode()
        # Sweep trials logged by another process reach the runtime's sweep metrics through the sync.
        trial = (("source", "sweep"), ("sweep_role", "trial"), ("sweep_score_metric", "r2"))
        log_run(client, experiment_id, RunSpec("co2_canada", "ridge", 0.5, now_ms(), tags=trial))
        wait_for(lambda: runtime.sweeps.trial_counts()["finished"] == 1, "the sweep trial counted")
        assert exporter.sync_running
        assert exporter.stats.errors == 0
        service.stop()  # MLflow goes away after it was up: that is an error
        wait_for(lambda: exporter.stats.errors >= 1, "a counted sync error", timeout=120)
        threads = [t for t in threading.enumerate() if t.name == "mlops-exporter-sync"]
    finally:
        shutdown_runtime()
        if service is not None:
            service.stop()
    assert get_runtime() is None
    assert threads and not any(t.is_alive() for t in threads)

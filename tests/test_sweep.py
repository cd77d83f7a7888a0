"""Sweeps against a real MLflow server: parent/child runs, best trial, failures, cancel, Dask, Prometheus."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import mlflow.pyfunc
import pytest
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry

from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.sweeps import SweepMetrics
from mlops_local.metrics.sync import MlflowSync
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.types import DatasetSpec
from mlops_local.settings import Settings
from mlops_local.sweep.run import run_sweep
from mlops_local.sweep.spec import SweepProgress, SweepSpec
from tests.postgres import on_both_stores
from tests.services import ROOT, stack_env, start_service, wait_for

FRIEDMAN = DatasetSpec("friedman1", options={"n_samples": 200})
# Slow enough (a fraction of a second per fit) that trials are still running when a test cancels.
SLOW = dict(dataset=DatasetSpec("friedman1", options={"n_samples": 400}), model="random_forest",
            ranges={"n_estimators": "150:300"}, search=("n_estimators",))


@pytest.fixture(scope="module")
def client(mlflow_env: dict[str, str]) -> MlflowClient:
    return MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])


def children(client: MlflowClient, experiment_id: str, parent: str) -> list:
    return list(client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                   max_results=500))


def running(client: MlflowClient, experiment_id: str) -> list:
    return list(client.search_runs([experiment_id], "attributes.status = 'RUNNING'"))


@on_both_stores
def test_grid_sweep_tracks_children_best_trial_failures_and_registration(mlflow_settings, client, tmp_path,
                                                                        caplog):
    metrics = SweepMetrics(CollectorRegistry())
    seen: list[SweepProgress] = []
    spec = SweepSpec(FRIEDMAN, "knn", strategy="grid", experiment="sweep-grid", jobs=2,
                     # 170 neighbours > 160 training rows: those trials fail in predict, for real
                     ranges={"n_neighbors": "3|10|170"}, search=("n_neighbors", "weights"),
                     models="best", register="sweep-test-knn", alias="champion")
    with caplog.at_level("INFO", logger="mlops_local.sweep.run"):
        result = run_sweep(spec, mlflow_settings, metrics=metrics, on_trial=seen.append)

    assert result.status == "FINISHED" and result.total == 6 and len(result.trials) == 6
    # the best trial's worker kept its model, logged as it ends (the one path for the best model)
    assert f"best trial {result.best.number}'s model logged on run" in caplog.text and result.warnings == []
    assert [p.done for p in seen] == [1, 2, 3, 4, 5, 6]
    runs = children(client, result.experiment_id, result.parent_run_id)
    assert len(runs) == 6
    assert {r.data.tags["sweep_trial"] for r in runs} == {str(n) for n in range(6)}
    assert all(r.data.tags["source"] == "sweep" and r.data.tags["model"] == "knn" for r in runs)
    failed = [r for r in runs if r.info.status == "FAILED"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(failed) == 2 and len(finished) == 4, [r.data.tags.get("error") for r in failed]
    assert all(r.data.params["n_neighbors"] == "170" for r in failed)
    assert all("n_neighbors" in r.data.tags["error"] for r in failed)

    best = max(finished, key=lambda r: r.data.metrics["r2"])
    assert result.best.run_id == best.info.run_id and result.best.score == best.data.metrics["r2"]
    assert [r.info.run_id for r in runs if r.data.tags.get("best_trial") == "true"] == [best.info.run_id]

    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_role"] == "parent"
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.params["strategy"] == "grid"
    assert parent.data.params["space.n_neighbors"] == "one of 3, 10, 170"
    assert parent.data.params["best.n_neighbors"] == best.data.params["n_neighbors"]
    assert parent.data.metrics["best_r2"] == best.data.metrics["r2"]
    assert parent.data.metrics["trials_failed"] == 2
    history = client.get_metric_history(result.parent_run_id, "trial_score")
    assert sorted(m.step for m in history) == sorted(int(r.data.tags["sweep_trial"]) for r in finished)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "plots")}
    assert {"plots/sweep_score_by_trial.svg", "plots/sweep_param_n_neighbors.svg",
            "plots/sweep_param_weights.svg"} <= artifacts
    table = Path(client.download_artifacts(result.parent_run_id, "sweep/trials.csv")).read_text().splitlines()
    assert len(table) == 7 and table[0].startswith("trial,status,score,run_id")

    # only the best trial carries a model and plots; the model loads and predicts raw rows
    assert {"model", "plots"} <= {a.path for a in client.list_artifacts(best.info.run_id)}
    assert {"plots/predicted_vs_actual.svg", "plots/residuals.svg"} <= \
        {a.path for a in client.list_artifacts(best.info.run_id, "plots")}
    for other in (r for r in runs if r.info.run_id != best.info.run_id):
        assert not {"model", "plots"} & {a.path for a in client.list_artifacts(other.info.run_id)}
        assert not other.inputs.dataset_inputs and other.data.params["dataset"] == "friedman1"  # named
    # the dataset input: on the parent and on the best trial's run (which reads like a training's)
    digest = load_dataset(FRIEDMAN).fingerprint
    assert [d.dataset.digest for d in best.inputs.dataset_inputs] == [digest]
    assert [d.dataset.digest for d in parent.inputs.dataset_inputs] == [digest]
    assert result.model_uri == f"runs:/{best.info.run_id}/model"
    data = load_dataset(FRIEDMAN)
    local = client.download_artifacts(best.info.run_id, "model", str(tmp_path))
    assert len(mlflow.pyfunc.load_model(local).predict(data.X.head(5))) == 5
    version = client.get_model_version_by_alias("sweep-test-knn", "champion")
    assert version.run_id == best.info.run_id and result.registered_version == version.version
    assert result.promotion == "promoted" and result.alias_set  # no champion yet: the gate lets it in

    # metrics: published as trials ended, and derived from MLflow alone (a sweep run by the CLI)
    assert metrics.trial_counts() == {"finished": 4, "failed": 2, "killed": 0}
    assert metrics.best_score("sweep-grid", "friedman1", "knn", "r2") == result.best.score
    registry = CollectorRegistry()
    exporter = ModelMetricsExporter(registry, mlflow_settings, client=client, experiments=["sweep-grid"])
    derived = SweepMetrics(registry)
    exporter.add_run_listener(derived.observe_runs)  # as the UI process's runtime wires it
    MlflowSync(client, exporter, experiments=["sweep-grid"]).sync_once()
    assert derived.trial_counts() == metrics.trial_counts()
    assert registry.get_sample_value("mlops_sweep_trials_total", {"status": "failed"}) == 2
    labels = {"experiment": "sweep-grid", "dataset": "friedman1", "model": "knn", "metric": "r2"}
    assert registry.get_sample_value("mlops_sweep_best_score", labels) == result.best.score


def test_a_trial_keeps_its_model_only_when_it_beats_the_best_known_at_submission(mlflow_settings, client,
                                                                                 tmp_path):
    import io
    import zipfile

    from mlops_local.ml.types import TrainRequest
    from mlops_local.sweep.worker import TrialTask, run_trial

    experiment_id = client.create_experiment("sweep-keep")
    parent = client.create_run(experiment_id).info.run_id
    request = TrainRequest(FRIEDMAN, "ridge", params={"alpha": 1.0}, experiment="sweep-keep", source="sweep",
                           parent_run_id=parent, log_model=False)
    task = TrialTask(0, request, mlflow_settings, client.tracking_uri, experiment_id, parent, "r2",
                     keep_model=True)
    first = run_trial(task)
    assert first.status == "FINISHED" and first.model_archive is not None
    with zipfile.ZipFile(io.BytesIO(first.model_archive)) as zf:
        zf.extractall(tmp_path)
    data = load_dataset(FRIEDMAN)
    assert len(mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(data.X.head(3))) == 3
    assert "model" not in {a.path for a in client.list_artifacts(first.run_id)}  # kept, not uploaded

    # the same params score the same: a tie goes to the earlier trial, as the sweep decides the best
    assert run_trial(replace(task, number=1, beat=(first.score, 0))).model_archive is None
    assert run_trial(replace(task, number=2, beat=(first.score, 5))).model_archive is not None
    assert run_trial(replace(task, number=3, beat=(first.score - 0.01, 0))).model_archive is not None
    lower = replace(task, number=4, score_metric="rmse", higher_is_better=False, beat=(0.0, 0))
    assert run_trial(lower).model_archive is None  # nothing beats an RMSE of 0
    assert run_trial(replace(task, number=5, keep_model=False)).model_archive is None
    # local workers write the zip to the sweep's directory and send back its path, not megabytes of
    # bytes through the process pool's pipe (a worker killed mid-send, as on cancel, hangs the pool)
    (tmp_path / "kept").mkdir()
    path = run_trial(replace(task, number=6, model_dir=str(tmp_path / "kept"))).model_archive
    assert isinstance(path, str) and Path(path).parent == tmp_path / "kept"
    with zipfile.ZipFile(path) as zf:
        assert {"model/MLmodel", "plots/predicted_vs_actual.svg", "plots/residuals.svg"} <= set(zf.namelist())
    assert [p.suffix for p in (tmp_path / "kept").iterdir()] == [".zip"]  # no .part left behind


def test_when_the_best_trial_could_not_keep_its_model_the_sweep_says_so_and_logs_none(mlflow_settings, client,
                                                                                    monkeypatch):
    from distributed import LocalCluster

    from mlops_local.sweep import worker as sweep_worker

    def zip_dir(root: Path) -> bytes:  # every trial's copy fails (injected), as on a full disk
        raise OSError("No space left on device (injected)")

    monkeypatch.setattr(sweep_worker, "zip_dir", zip_dir)
    # Dask workers as threads of this process, so the injected failure reaches the trials
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        spec = SweepSpec(FRIEDMAN, "ridge", strategy="random", trials=3, seed=2, experiment="sweep-not-kept",
                         dask_scheduler=cluster.scheduler_address, models="best", register="sweep-not-kept")
        result = run_sweep(spec, mlflow_settings)
    # the trials stand; the warning names the best trial and why its model is missing
    assert result.status == "FINISHED" and {t.status for t in result.trials} == {"FINISHED"}
    assert len(result.warnings) == 1, result.warnings
    warning = result.warnings[0]
    assert warning.startswith("best model not logged") and f"trial {result.best.number}'s" in warning
    assert "No space left on device (injected)" in warning
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["error"] == warning
    assert parent.data.tags["best_run_id"] == result.best.run_id
    # nothing half-uploaded or registered: no trial carries a model, no version points at one
    assert result.model_uri is None and result.registered_version is None
    assert all(not {"model", "plots"} & {a.path for a in client.list_artifacts(t.run_id)}
               for t in result.trials)
    assert not client.search_model_versions("name = 'sweep-not-kept'")


def test_cancel_mid_sweep_kills_running_trials_and_leaves_nothing_running(mlflow_settings, client):
    cancel = threading.Event()

    def after_two(progress: SweepProgress) -> None:
        if progress.done >= 2:
            cancel.set()

    spec = SweepSpec(**SLOW, strategy="random", trials=12, jobs=2, experiment="sweep-cancel")
    result = run_sweep(spec, mlflow_settings, cancel=cancel, on_trial=after_two)

    assert result.status == "KILLED" and result.model_uri is None
    assert running(client, result.experiment_id) == []
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "KILLED" and parent.data.tags["sweep_state"] == "cancelled"
    runs = children(client, result.experiment_id, result.parent_run_id)
    assert 2 <= len(runs) < 12  # scheduling stopped
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert all(r.data.tags["error"].startswith("cancelled") for r in killed)
    assert sorted(t.run_id for t in result.trials if t.run_id) == sorted(r.info.run_id for r in runs)
    wait_for(lambda: not multiprocessing.active_children(), "the worker processes exiting", 20)


def test_a_worker_killed_mid_trial_fails_that_trial_and_the_sweep_goes_on(mlflow_settings, client):
    import psutil

    def kill_a_worker(progress: SweepProgress) -> None:
        if progress.done == 1:  # the other worker is mid-trial: kill it as the kernel's OOM killer would
            workers = [p for p in psutil.Process().children(recursive=True)
                       if "forkserver" in " ".join(p.parent().cmdline())]
            workers[0].kill()

    spec = SweepSpec(**SLOW, strategy="random", trials=6, jobs=2, experiment="sweep-crash", models="none")
    result = run_sweep(spec, mlflow_settings, on_trial=kill_a_worker)
    assert result.status == "FINISHED" and len(result.trials) == 6
    crashed = [t for t in result.trials if t.status == "FAILED"]  # the killed one (and any it broke)
    assert crashed and all("BrokenProcessPool" in t.error for t in crashed), [t.error for t in crashed]
    assert running(client, result.experiment_id) == []
    runs = {r.info.run_id: r for r in children(client, result.experiment_id, result.parent_run_id)}
    assert all(runs[t.run_id].info.status == "FAILED" for t in crashed if t.run_id in runs)
    assert sum(t.status == "FINISHED" for t in result.trials) >= 4  # later trials ran on fresh workers


def test_dask_cluster_runs_the_same_trials_as_local_processes_and_cancels(mlflow_settings, client):
    from distributed import LocalCluster

    spec = SweepSpec(FRIEDMAN, "decision_tree", strategy="random", trials=4, seed=3, jobs=2,
                     experiment="sweep-dask", models="all")
    local = run_sweep(spec, mlflow_settings)
    cancel = threading.Event()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = run_sweep(replace(spec, dask_scheduler=cluster.scheduler_address, jobs=None,
                                   models="best"), mlflow_settings)
        # Dask tasks cannot be killed: running trials see the sweep's cancel event and close themselves.
        stopped = run_sweep(SweepSpec(**SLOW, strategy="random", trials=8, experiment="sweep-dask-cancel",
                                      dask_scheduler=cluster.scheduler_address),
                            mlflow_settings, cancel=cancel,
                            # the second result: the trial started after the first is early in its fit
                            on_trial=lambda progress: progress.done >= 2 and cancel.set())
        assert stopped.status == "KILLED"
        wait_for(lambda: running(client, stopped.experiment_id) == [], "no trial left RUNNING", 60)
    # Not compared run by run with MLflow: a trial already logging its metrics when Stop comes can still
    # close its run FINISHED after the sweep closed it (one request's window, Dask cannot kill it). That
    # a running Dask trial stops at its next step on the Event is the next test, without the race.
    assert 1 <= len(children(client, stopped.experiment_id, stopped.parent_run_id)) < 8
    assert remote.executor.startswith("dask tcp://") and local.executor.startswith("local processes")
    assert [(t.number, t.params, t.score) for t in remote.trials] == \
        [(t.number, t.params, t.score) for t in local.trials]
    assert {t.status for t in remote.trials} == {"FINISHED"}
    assert remote.best.number == local.best.number
    # models = best: the best trial's Dask worker kept its model, logged on its child run alone
    remote_runs = children(client, remote.experiment_id, remote.parent_run_id)
    assert len(remote_runs) == 4
    assert [r.info.run_id for r in remote_runs if "model" in {a.path for a in client.list_artifacts(
        r.info.run_id)}] == [remote.best.run_id]
    # models = all: every trial logged its own model, plots and dataset input, like a training
    assert all({"model", "plots"} <= {a.path for a in client.list_artifacts(t.run_id)} for t in local.trials)
    assert all(client.get_run(t.run_id).inputs.dataset_inputs for t in local.trials)


def test_a_dask_trial_stops_at_its_next_step_once_the_sweeps_cancel_event_is_set(mlflow_settings, client,
                                                                                 monkeypatch):
    from distributed import Client, Event, LocalCluster

    from mlops_local.ml.types import TrainRequest
    from mlops_local.sweep.worker import TrialTask, run_trial

    experiment_id = client.create_experiment("sweep-dask-event")
    parent = client.create_run(experiment_id).info.run_id
    request = TrainRequest(FRIEDMAN, "ridge", experiment="sweep-dask-event", source="sweep",
                           parent_run_id=parent, log_model=False, extra_tags={"sweep_trial": "0"})
    task = TrialTask(0, request, mlflow_settings, client.tracking_uri, experiment_id, parent, "r2",
                     cancel_event="mlops-sweep-cancel-test")
    asked: list[str] = []
    real_get_run = MlflowClient.get_run
    monkeypatch.setattr(MlflowClient, "get_run", lambda self, run_id: asked.append(run_id) or real_get_run(
        self, run_id))
    # workers as threads of this process, so the count above sees their MLflow requests
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster, set_as_default=False) as dask:
        finished = dask.submit(run_trial, task, pure=False).result()
        Event(task.cancel_event, client=dask).set()
        stopped = dask.submit(run_trial, replace(task, number=1), pure=False).result()
    assert finished.status == "FINISHED" and finished.score is not None
    assert parent not in asked  # the trials asked the scheduler, not MLflow, whether the sweep goes on
    assert (stopped.status, stopped.error, stopped.run_id) == ("KILLED", "cancelled", None)  # before its run


def test_optuna_sweep_minimising_rmse_shows_live_in_prometheus(mlflow_settings, client, tmp_path):
    from mlops_local.metrics.promapi import PrometheusClient
    from mlops_local.metrics.server import start_metrics_server

    env = stack_env(tmp_path / "home")
    settings = Settings.from_env(env)
    registry = CollectorRegistry()
    metrics = SweepMetrics(registry)
    server = start_metrics_server(registry, settings.host, settings.metrics_port)
    prometheus = start_service("prometheus", env, tmp_path / "logs")
    prom = PrometheusClient.from_settings(settings)

    def finished_in_prometheus() -> float:
        found = prom.query('mlops_sweep_trials_total{status="finished"}')
        return found[0].value if found else 0.0

    live: list[float] = []

    def on_trial(progress: SweepProgress) -> None:
        if progress.done == 1:  # the sweep waits here until Prometheus has scraped its first trial
            wait_for(lambda: finished_in_prometheus() >= 1, "the first trial in Prometheus", 30)
            live.append(finished_in_prometheus())

    try:
        spec = SweepSpec(FRIEDMAN, "ridge", strategy="optuna", metric="rmse", trials=6, jobs=2, seed=1,
                         ranges={"alpha": "0.001:1000"}, search=("alpha",), experiment="sweep-optuna",
                         models="none")
        result = run_sweep(spec, mlflow_settings, metrics=metrics, on_trial=on_trial)
        assert [t.status for t in result.trials] == ["FINISHED"] * 6, [t.error for t in result.trials]
        assert live == [1.0]
        runs = children(client, result.experiment_id, result.parent_run_id)
        assert len(runs) == 6 and all(r.data.tags["sweep_goal"] == "minimize" for r in runs)
        best = min(runs, key=lambda r: r.data.metrics["rmse"])
        assert result.best.run_id == best.info.run_id and not result.higher_is_better
        expr = ('mlops_sweep_best_score{experiment="sweep-optuna",dataset="friedman1",model="ridge",'
                'metric="rmse"}')
        wait_for(lambda: [s.value for s in prom.query(expr)] == [best.data.metrics["rmse"]],
                 "the best score in Prometheus", 30)
        wait_for(lambda: finished_in_prometheus() == 6, "all six trials in Prometheus", 30)
    finally:
        prometheus.stop()
        server.stop()


def test_mlflow_going_down_stops_the_sweep_with_a_clear_error(mlflow_service):
    from mlops_local.errors import ServiceUnavailable

    service, env = mlflow_service
    env = {**env, "MLFLOW_TRACKING_URI": service.url}

    def stop_server(progress: SweepProgress) -> None:
        if progress.done == 1:
            service.stop()

    spec = SweepSpec(FRIEDMAN, "ridge", strategy="random", trials=12, jobs=2, experiment="sweep-down",
                     models="none")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="stopped answering"):
        run_sweep(spec, Settings.from_env(env), on_trial=stop_server)
    assert time.monotonic() - started < 60  # bounded retries: no hang


def test_ctrl_c_on_the_cli_cancels_cleanly(mlflow_env, client, tmp_path):
    experiment = "sweep-ctrl-c"
    command = [sys.executable, "-m", "mlops_local.cli", "sweep", "--dataset", "friedman1",
               "--dataset-option", "n_samples=400", "--model", "random_forest", "--param-range",
               "n_estimators=150:300", "--search", "n_estimators", "--trials", "24", "--jobs", "2",
               "--experiment", experiment, "--json"]
    # Its own session, so a Ctrl-C-like SIGINT goes to the whole group (CLI and workers) as in a terminal.
    # SIGINT back to its default action first, as a terminal has it: a test run started in the background
    # (`bin/test &`) ignores SIGINT, the child would inherit that, and Python then installs no
    # KeyboardInterrupt handler (seen: every trial ran to the end after the Ctrl-C, exit 0).
    proc = subprocess.Popen(command, env=mlflow_env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # The CLI's own progress line is the trigger (polling MLflow lagged so far behind under load
        # that every trial had finished before the Ctrl-C).
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if re.search(r"^\[\d+/24\] trial \d+ finished", line):
                break
        else:
            raise AssertionError("the sweep ended without a finished trial:\n" + "".join(seen))
        os.killpg(proc.pid, signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
        err = "".join(seen) + rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["status"] == "KILLED" and summary["counts"]["finished"] >= 1
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    assert running(client, exp_id) == []
    assert client.get_run(summary["parent_run_id"]).info.status == "KILLED"
    assert "Traceback" not in err


class _StoppedWorkers:
    """The local pool once Stop has killed it: nothing left to abort (the trials below are the corner
    a kill cannot be timed to hit: a worker killed after its trial's metrics reached MLflow)."""

    slots, label, threads_per_trial, cancel_event = 2, "local processes (2, forkserver)", 1, None

    def abort(self) -> None:
        pass


def test_stop_keeps_trials_whose_scores_were_logged_and_kills_only_the_interrupted(mlflow_settings, client):
    from mlops_local.sweep.loop import SweepRun
    from mlops_local.sweep.plan import plan_sweep
    from mlops_local.sweep.spec import TrialOutcome
    from mlops_local.sweep.tracking import create_parent

    spec = SweepSpec(**SLOW, strategy="random", trials=6, experiment="sweep-stop-keeps")
    plan = plan_sweep(spec, load=False)
    experiment_id = client.create_experiment("sweep-stop-keeps")
    parent = create_parent(client, experiment_id, spec, plan.space, dataset=plan.dataset, total=6,
                           score_metric="r2", higher_is_better=True, executor=_StoppedWorkers.label)
    sweep = SweepRun(plan, mlflow_settings, client, experiment_id, parent, _StoppedWorkers(), None,
                     threading.Event(), None, None)
    sweep.record(TrialOutcome(0, {"n_estimators": 150}, "FINISHED", run_id=None, score=0.90))
    runs = {}
    for number, r2 in ((1, 0.95), (2, None)):  # 1: killed after logging its metrics; 2: mid-fit
        run = client.create_run(experiment_id, tags={**sweep.trial_tags(number),
                                                     "mlflow.parentRunId": parent})
        if r2 is not None:
            client.log_metric(run.info.run_id, "r2", r2)
        sweep.inflight[number] = sweep.task(number, {"n_estimators": 200 + number})
        runs[number] = run.info.run_id
    sweep.cancel.set()
    sweep.stop()

    outcomes = {o.number: o for o in sweep.outcomes}
    assert (outcomes[1].status, outcomes[1].score) == ("FINISHED", 0.95)
    assert (outcomes[2].status, outcomes[2].score) == ("KILLED", None)
    assert sweep.best.number == 1
    assert client.get_run(runs[1]).info.status == "FINISHED"
    assert client.get_run(runs[2]).info.status == "KILLED"
    assert [r.info.run_id for r in running(client, experiment_id)] == [parent]  # the sweep closes it
    client.set_terminated(parent, "KILLED")  # as the sweep would once stop() returned

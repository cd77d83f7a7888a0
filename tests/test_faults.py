"""Nothing left RUNNING (issue 11, section 3): SIGTERM of `train` and `sweep`, MLflow killed during a
training, and the reaper closing the run of a process killed with -9. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.settings import Settings
from tests.services import ROOT, Service, alive, apply_stack_env, process_tree, wait_for

pytestmark = pytest.mark.integration

MLOPS = [sys.executable, "-m", "mlops_local.cli"]
RUNNING = "attributes.status = 'RUNNING'"


def _runs(client: MlflowClient, experiment: str, query: str = "") -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], query)


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*MLOPS, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _none_left(pids: set[int]) -> set[int]:
    """The pids of ``pids`` still alive once their parent has exited (zombies reaped by init excluded)."""
    deadline = time.monotonic() + 5
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive(left)
    for pid in left:  # do not leak them into the rest of the session
        os.kill(pid, signal.SIGKILL)
    return left


def test_sigterm_of_train_closes_its_run_killed_and_exits_143(mlflow_env: dict[str, str]) -> None:
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    experiment = "fault-train-sigterm"
    proc = _start(["train", "--dataset", "co2_canada", "--model", "random_forest", "--param",
                   "n_estimators=400", "--cv", "3", "--experiment", experiment], mlflow_env)
    try:
        wait_for(lambda: bool(_runs(client, experiment, RUNNING)), "a RUNNING run", 120)
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGTERM)  # as `kill PID` does
    finally:
        out, err = _finish(proc)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "mlops-local: terminated" and "Traceback" not in err
    (run,) = _runs(client, experiment)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "terminated (SIGTERM)"
    assert run.data.tags["mlops.owner.pid"] == str(proc.pid)
    assert _none_left(tree) == set()


def test_sigterm_of_sweep_kills_running_trials_stops_workers_and_exits_143(mlflow_env: dict[str, str]):
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    experiment = "fault-sweep-sigterm"
    proc = _start(["sweep", "--dataset", "friedman1", "--dataset-option", "n_samples=400", "--model",
                   "random_forest", "--param-range", "n_estimators=300:600", "--search", "n_estimators",
                   "--trials", "8", "--jobs", "2", "--experiment", experiment, "--json"], mlflow_env)
    try:
        # A trial running in a worker process: the parent has children to stop.
        wait_for(lambda: bool(_runs(client, experiment, "tags.sweep_role = 'trial' and "
                                                        "attributes.status = 'RUNNING'")),
                 "a running trial", 120)
        tree = process_tree(proc.pid)
        assert len(tree) > 1  # the workers
        proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
    finally:
        out, err = _finish(proc)
    assert proc.returncode == 143, err
    summary = json.loads(out)
    assert summary["status"] == "KILLED"
    assert _runs(client, experiment, RUNNING) == []
    assert client.get_run(summary["parent_run_id"]).info.status == "KILLED"
    assert "Traceback" not in err
    assert _none_left(tree) == set()  # no worker orphaned


def test_mlflow_killed_during_train_finishes_into_the_local_store(
        mlflow_service: tuple[Service, dict[str, str]]) -> None:
    service, env = mlflow_service
    env = {**env, "MLFLOW_TRACKING_URI": service.url}
    settings = Settings.from_env(env)
    server = MlflowClient(service.url)
    experiment = "fault-mlflow-killed"
    proc = _start(["train", "--dataset", "co2_canada", "--model", "random_forest", "--param",
                   "n_estimators=200", "--experiment", experiment, "--json"], env)
    try:
        wait_for(lambda: bool(_runs(server, experiment, RUNNING)), "a RUNNING run", 120)
        for pid in process_tree(service.proc.pid):  # kill -9 of MLflow: the wrapper, the server, its workers
            os.kill(pid, signal.SIGKILL)
    finally:
        out, err = _finish(proc, timeout=240)
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped during the training" in lines[0], err
    assert "local store" in lines[0]
    result = json.loads(out)
    assert result["local_store_fallback"] is True
    local = MlflowClient(settings.backend_store_uri)
    run = local.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["r2"] > 0.5
    # The trained model is not lost: on disk where the server serves it from once restarted.
    assert (tracking.local_artifact_dir(settings, run.info.artifact_uri) / "model" / "MLmodel").is_file()
    # The run the server held is closed in the same store, not RUNNING for ever.
    assert _runs(local, experiment, RUNNING) == []
    assert len(_runs(local, experiment)) == 2


OWNER = r"""
import os, sys, time
from mlflow.tracking import MlflowClient
from mlops_local import tracking
from mlops_local.ml.runlog import RunLogger
from mlops_local import tracking
from mlops_local.settings import Settings

settings = Settings.from_env()
client = MlflowClient(settings.effective_tracking_uri)
logger = RunLogger(client, settings, tracking.ensure_experiment(client, sys.argv[1]))
logger.open("doomed", {"dataset": "d", "model": "m"}, {})
print(logger.run_id, flush=True)
time.sleep(600)
"""


def test_the_reaper_closes_the_run_of_a_process_killed_with_9(
        mlflow_service: tuple[Service, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_local.owner import owner_tags
    from mlops_local.runtime import ensure_runtime, shutdown_runtime
    from mlops_local.settings import get_settings

    service, env = mlflow_service  # its own server: every run it holds is this test's
    env = {**env, "MLFLOW_TRACKING_URI": service.url}
    client = MlflowClient(service.url)
    experiment = "fault-reaper"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, experiment], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        doomed = owner.stdout.readline().strip()
        # A run of a live process (this one), and one whose pid is alive but was reused (another start).
        exp_id = client.get_experiment_by_name(experiment).experiment_id
        live = client.create_run(exp_id, tags=owner_tags()).info.run_id
        reused = client.create_run(exp_id, tags={"mlops.owner.host": socket.gethostname(),
                                                 "mlops.owner.pid": str(owner.pid),
                                                 "mlops.owner.start": "1000.00"}).info.run_id
        shutdown_runtime()
        apply_stack_env(monkeypatch, env)
        runtime = ensure_runtime(get_settings())  # as `serve ui` starts it
        wait_for(lambda: client.get_run(reused).info.status == "KILLED", "the reused-pid run reaped", 60)
        assert client.get_run(doomed).info.status == "RUNNING"  # its owner is alive
        owner.kill()  # kill -9
        owner.wait()
        wait_for(lambda: client.get_run(doomed).info.status == "KILLED", "the orphaned run reaped", 60)
        assert "closed by the reaper" in client.get_run(doomed).data.tags["error"]
        assert client.get_run(live).info.status == "RUNNING"
        assert runtime.registry.get_sample_value("mlops_runs_reaped_total") == 2
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        shutdown_runtime()
        get_settings.cache_clear()
    client.set_terminated(live, "FINISHED")  # ours: nothing RUNNING at the end of the session


def test_owner_gone_judges_only_this_hosts_runs(tmp_path: Path) -> None:
    from mlops_local.owner import TAG_HOST, TAG_PID, TAG_START, owner_gone, owner_tags

    mine = owner_tags()
    assert not owner_gone(mine)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert owner_gone({**mine, TAG_PID: str(dead.pid)})
    assert owner_gone({**mine, TAG_START: "1000.00"})  # pid reused by a later process
    assert not owner_gone({**mine, TAG_HOST: "another-host", TAG_PID: str(dead.pid)})
    assert not owner_gone({})


def _dead_pid_tags() -> dict[str, str]:
    from mlops_local.owner import TAG_PID, owner_tags

    dead = subprocess.Popen(["true"])
    dead.wait()
    return {**owner_tags(), TAG_PID: str(dead.pid)}


def test_the_reaper_leaves_a_live_sweeps_trials_to_the_sweep(mlflow_env: dict[str, str]) -> None:
    """A Stop kills the trial workers and then closes their runs (FINISHED if scored): the reaper must
    not race it. Children of a RUNNING parent with a live owner are skipped; once the parent is closed,
    a child still RUNNING is an orphan like any other."""
    from mlops_local.owner import owner_tags
    from mlops_local.reaper import Reaper
    from mlops_local.runmeta import TAG_PARENT

    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    exp_id = tracking.ensure_experiment(client, "fault-reaper-sweep")
    parent = client.create_run(exp_id, tags=owner_tags()).info.run_id  # this process: alive
    child = client.create_run(exp_id, tags={**_dead_pid_tags(), TAG_PARENT: parent}).info.run_id
    reaper = Reaper(None)
    assert reaper.reap(client, [exp_id]) == []
    assert client.get_run(child).info.status == "RUNNING"
    client.set_terminated(parent, "KILLED")  # the sweep ended without closing it: now an orphan
    assert reaper.reap(client, [exp_id]) == [child]
    assert client.get_run(child).info.status == "KILLED"


def test_the_reaper_keeps_the_status_of_a_run_closed_after_its_search(mlflow_env: dict[str, str]) -> None:
    """The window between the reaper's search and its close: the run's owner (a sweep) closed it
    FINISHED meanwhile. Injected: the search returns, then the run is closed before the reaper acts."""
    from mlops_local.reaper import Reaper

    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    exp_id = tracking.ensure_experiment(client, "fault-reaper-stale")
    run_id = client.create_run(exp_id, tags=_dead_pid_tags()).info.run_id

    class ClosesAfterSearch(MlflowClient):
        def search_runs(self, *args, **kwargs):
            page = super().search_runs(*args, **kwargs)
            client.set_terminated(run_id, "FINISHED")
            return page

    assert Reaper(None).reap(ClosesAfterSearch(client.tracking_uri), [exp_id]) == []
    assert client.get_run(run_id).info.status == "FINISHED"

"""End to end on real processes: MLflow, Prometheus (1 s scrapes) and `mlops-local serve ui` (/metrics).

Trainings come from other processes (the CLI, a client), reach the UI process by its sync, and are
checked where users look: Prometheus' HTTP API. Deadlines are generous (a loaded CI machine); the
real delays are measured by benchmarks/bench_metrics.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_local.settings import Settings
from tests.postgres import STORES, store_overrides
from tests.services import MLOPS, ROOT, Service, stack_env, start_service
from tests.test_sync import RunSpec, log_runs, new_experiment, now_ms, wait_for

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SLACK = 30.0  # seconds on top of one scrape plus one sync interval before a test gives up


@dataclass
class Stack:
    """Private MLflow + Prometheus + the UI process (restartable) on free ports."""

    env: dict[str, str]
    home: Path
    client: MlflowClient
    prometheus: str
    ui: Service | None = None
    restarts: list[tuple[float, float]] = field(default_factory=list)  # (stopped at, answering again at)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MLOPS_METRICS_PORT']}/metrics"

    @property
    def deadline(self) -> float:
        return float(self.env["MLOPS_SCRAPE_INTERVAL"]) + float(self.env["MLOPS_SYNC_INTERVAL"]) + SLACK

    def start_ui(self) -> None:
        self.ui = start_service("ui", self.env, self.home / "logs")

    def restart_ui(self) -> None:
        assert self.ui is not None
        stopped = time.time()
        assert not self.ui.stop(), "the UI process left children behind"
        self.start_ui()
        self.restarts.append((stopped, time.time()))

    def query(self, expr: str) -> list[dict]:
        """Prometheus instant query; the result list (vector or matrix)."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            payload = json.load(resp)
        assert payload["status"] == "success", payload
        return payload["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None while Prometheus has no such series."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module", params=STORES)
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp(f"exporter-stack-{request.param}")
    env = stack_env(home, **store_overrides(request, request.param))
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    services = [start_service("mlflow", env, home / "logs")]
    stack = None
    try:
        services.append(start_service("prometheus", env, home / "logs"))
        stack = Stack(env, home, MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]), services[1].url)
        stack.start_ui()
        yield stack
    finally:
        if stack is not None and stack.ui is not None:
            stack.ui.stop()
        for service in reversed(services):
            service.stop()


def test_a_cli_training_reaches_prometheus_with_the_value_mlflow_holds(stack):
    experiment = "cli-e2e"
    done = subprocess.run(
        [*MLOPS, "train", "--dataset", "diabetes", "--model", "random_forest", "--param", "n_estimators=20",
         "--experiment", experiment, "--json"],
        env=stack.env, cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    r2 = stack.client.get_run(run_id).data.metrics["r2"]
    expr = f'mlops_model_r2{{model="random_forest",experiment="{experiment}",dataset="diabetes"}}'
    value = wait_for(lambda: stack.value(expr), "the CLI's R2 in Prometheus", timeout=stack.deadline)
    assert value == r2
    info = stack.query(f'mlops_last_run_info{{run_id="{run_id}"}}')
    assert len(info) == 1


def test_a_second_machine_trains_on_this_server_and_its_run_reaches_this_prometheus(stack, tmp_path):
    # Another machine: its own MLOPS_HOME and ports (nothing of its own running), this stack's server URL.
    other = stack_env(tmp_path / "machine-b", MLFLOW_TRACKING_URI=stack.env["MLFLOW_TRACKING_URI"],
                      MLOPS_CLIENT_NAME="machine-b")
    done = subprocess.run(
        [*MLOPS, "train", "--dataset", "friedman1", "--model", "lasso", "--experiment", "machine-b",
         "--json"],
        env=other, cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["local_store_fallback"] is False
    assert not (tmp_path / "machine-b" / "mlflow").exists()  # nothing stored on the client
    run = stack.client.get_run(result["run_id"])
    assert (run.data.tags["source"], run.data.tags["mlops.client"]) == ("cli", "machine-b")
    expr = 'mlops_model_r2{model="lasso",experiment="machine-b",dataset="friedman1"}'
    value = wait_for(lambda: stack.value(expr), "the other machine's R2 here", timeout=stack.deadline)
    assert value == run.data.metrics["r2"]
    # Prometheus tells the machines apart: the other machine's one training under its own name only.
    assert Settings.from_env(stack.env).client_name != "machine-b"
    assert wait_for(lambda: stack.query('mlops_client_runs_total{client="machine-b"}'),
                    "the other machine's count", timeout=stack.deadline)
    assert stack.value('sum(mlops_client_runs_total{client="machine-b"})') == 1
    assert stack.value('mlops_client_runs_total{client="machine-b",source="cli"}') == 1


def _sweep_trials_on_metrics(stack) -> float:
    with urllib.request.urlopen(stack.metrics_url, timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("mlops_sweep_trials_total{"))


def test_two_machines_sweeping_at_once_lose_nothing(stack, tmp_path):
    # diabetes, not friedman1: the test of two trainings in one second counts every friedman1/ridge run
    before = stack.value("sum(mlops_sweep_trials_total)") or 0.0
    procs = []
    for machine in ("machine-c", "machine-d"):
        env = stack_env(tmp_path / machine, MLFLOW_TRACKING_URI=stack.env["MLFLOW_TRACKING_URI"],
                        MLOPS_CLIENT_NAME=machine)
        log = tmp_path / f"{machine}.log"  # a file, not a pipe: neither process can block on its output
        procs.append((subprocess.Popen(
            [*MLOPS, "sweep", "--dataset", "diabetes", "--model", "ridge", "--strategy", "random",
             "--trials", "3", "--jobs", "2", "--models", "none", "--experiment", f"sweep-{machine}"],
            env=env, cwd=str(ROOT), stdout=log.open("wb"), stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        assert proc.wait(timeout=300) == 0, log.read_text()
    trials = 0
    for machine in ("machine-c", "machine-d"):
        experiment = stack.client.get_experiment_by_name(f"sweep-{machine}")
        trials += len(stack.client.search_runs([experiment.experiment_id],
                                               "tags.source = 'sweep' and tags.sweep_role = 'trial'"))
    assert trials == 6
    assert wait_for(lambda: stack.value("sum(mlops_sweep_trials_total)") == before + trials,
                    "every trial of both sweeps in Prometheus", timeout=stack.deadline)
    assert _sweep_trials_on_metrics(stack) == before + trials
    # Each machine's trials under its own client name, in Prometheus as in MLflow.
    for machine in ("machine-c", "machine-d"):
        expr = f'mlops_client_runs_total{{client="{machine}",source="sweep"}}'
        assert wait_for(lambda expr=expr: stack.value(expr) == 3, f"{machine}'s trials counted as its own",
                        timeout=stack.deadline)


def test_two_trainings_within_one_second_are_both_counted(stack):
    name, experiment_id = new_experiment(stack.client, "twice")
    t = now_ms()
    log_runs(stack.client, experiment_id, [RunSpec("friedman1", "ridge", 0.61, t),
                                           RunSpec("friedman1", "ridge", 0.64, t + 400)], workers=2)
    expr = 'mlops_training_runs_total{dataset="friedman1",model="ridge",status="finished"}'
    assert wait_for(lambda: stack.value(expr) == 2, "both trainings counted", timeout=stack.deadline)
    r2 = f'mlops_model_r2{{experiment="{name}",dataset="friedman1",model="ridge"}}'
    assert wait_for(lambda: stack.value(r2), "the later R2", timeout=stack.deadline) == 0.64


def test_metrics_endpoint_passes_promtool(stack):
    with urllib.request.urlopen(stack.metrics_url, timeout=10) as resp:
        body = resp.read()
    assert b"mlops_model_r2{" in body
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_restarting_the_ui_process_keeps_the_gauges_without_zeros(stack):
    name, experiment_id = new_experiment(stack.client, "restart")
    t = now_ms()
    log_runs(stack.client, experiment_id, [RunSpec("co2_canada", "random_forest", 0.93, t),
                                           RunSpec("co2_canada", "lasso", 0.71, t + 1)], workers=2)
    selector = f'mlops_model_r2{{experiment="{name}"}}'
    wait_for(lambda: len(stack.query(selector)) == 2, "both gauges", timeout=stack.deadline)
    time.sleep(3)  # a few scrapes before the restart
    stack.restart_ui()
    stopped, back = stack.restarts[-1]
    wait_for(lambda: min(max(float(ts) for ts, _ in series["values"]) for series in
                         stack.query(f"{selector}[2m]")) > back + 2, "samples after the restart",
             timeout=stack.deadline)

    expected = {"random_forest": 0.93, "lasso": 0.71}
    for series in stack.query(f"{selector}[2m]"):
        points = [(float(ts), float(v)) for ts, v in series["values"]]
        model = series["metric"]["model"]
        assert {v for _, v in points} == {expected[model]}, (model, points)  # never 0, never another value
        assert any(ts < stopped for ts, _ in points) and any(ts > back for ts, _ in points)
    # Every successful scrape of the new process already had the values (the first read came first).
    scrapes = [float(ts) for series in stack.query('up{job="mlops-local"}[2m]')
               for ts, v in series["values"] if float(v) == 1 and float(ts) > stopped]
    for series in stack.query(f"{selector}[2m]"):
        times = {float(ts) for ts, _ in series["values"]}
        assert scrapes and all(ts in times for ts in scrapes), (series["metric"], scrapes, sorted(times))
    # Counters come back at their MLflow totals: no reset for Prometheus to see.
    counters = 'mlops_training_runs_total{dataset="co2_canada"}'
    assert wait_for(lambda: stack.query(f"{counters}[2m]"), "counters", timeout=stack.deadline)
    resets = stack.query(f"resets({counters}[2m])")
    assert resets and all(float(r["value"][1]) == 0 for r in resets), resets

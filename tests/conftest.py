"""Shared fixtures: a temporary MLOPS_HOME, free ports, and real services started on them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_local import tracking
from mlops_local.ml.types import TrainResult
from mlops_local.settings import Settings
from tests.services import Service, apply_stack_env, serve_metrics, stack_env, start_service, wait_for

# Browser fixtures (chromium, browser_page) for every test module; lanes marks tests by the services they use.
pytest_plugins = ["tests.browser", "tests.lanes", "tests.serving_stack", "tests.postgres"]

for _key, _value in tracking.bounded_client_env().items():  # as the product's processes run
    os.environ.setdefault(_key, _value)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SHARED_CO2 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "co2_emissions_canada.csv"
PACKAGED_CO2 = Path(__file__).resolve().parents[1] / "mlops_local" / "data" / "co2_emissions_canada.csv"


@pytest.fixture(scope="session")
def co2_csv() -> Path:
    """The real CO2 dataset: ../shared when present (as in the brief), else the packaged copy."""
    return SHARED_CO2 if SHARED_CO2.is_file() else PACKAGED_CO2


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    """Settings for a private stack: temporary home, free ports (nothing started)."""
    return Settings.from_env(stack_env(tmp_path / "home"))


def _session_mlflow(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                    store: str) -> Iterator[dict[str, str]]:
    from tests.postgres import store_overrides  # a plugin module: imported by pytest first

    home = tmp_path_factory.mktemp(f"mlflow-home-{store}")
    env = stack_env(home, **store_overrides(request, store))
    service = start_service("mlflow", env, home / "logs")
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    yield env
    service.stop()


@pytest.fixture(scope="session")
def sqlite_mlflow_env(tmp_path_factory: pytest.TempPathFactory,
                      request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """One real MLflow server on the SQLite store for the session (it is the slow one)."""
    yield from _session_mlflow(tmp_path_factory, request, "sqlite")


@pytest.fixture(scope="session")
def postgresql_mlflow_env(tmp_path_factory: pytest.TempPathFactory,
                          request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """One real MLflow server on a database of the session's PostgreSQL cluster."""
    yield from _session_mlflow(tmp_path_factory, request, "postgresql")


@pytest.fixture(scope="session")
def mlflow_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The session's MLflow server (SQLite; tests marked ``on_both_stores`` get PostgreSQL's too);
    its env points clients at it."""
    return request.getfixturevalue(f"{getattr(request, 'param', None) or 'sqlite'}_mlflow_env")


@pytest.fixture(scope="session")
def mlflow_settings(mlflow_env: dict[str, str]) -> Settings:
    """Settings whose tracking URI is the session's real MLflow server."""
    return Settings.from_env(mlflow_env)


@pytest.fixture
def mlflow_service(tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    """A private MLflow server for a test that needs to stop or restart it."""
    env = stack_env(tmp_path / "home")
    service = start_service("mlflow", env, tmp_path / "logs")
    yield service, env
    service.stop()


@pytest.fixture(scope="session")
def honcho_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The whole stack from the Procfile under honcho, on free ports in a temporary MLOPS_HOME.

    Yields the stack's environment (ports, MLOPS_HOME, MLFLOW_TRACKING_URI) once every required
    service is healthy. Teardown fails if any process outlives honcho's stop.
    """
    from tests.services import start_honcho, wait_stack_healthy

    home = tmp_path_factory.mktemp("stack-home")
    stack = start_honcho(stack_env(home), home / "logs")
    wait_stack_healthy(stack)
    env = dict(stack.env)
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    yield env
    leftovers = stack.stop()
    assert not leftovers, f"processes left after stopping honcho: {leftovers}"


# -- a real Prometheus scraping a real /metrics endpoint fed by the exporter (panels, promapi, export) --

@dataclass
class PrometheusStack:
    """Prometheus (1 s scrapes) + this process's /metrics with a few trainings published."""

    env: dict[str, str]
    settings: Settings
    client: object  # mlops_local.metrics.promapi.PrometheusClient
    metrics_target: str
    trainings: list  # the latest TrainResult per (experiment, dataset, model)
    since: float  # before the first scrape
    until: float  # after several scrapes of every series


def _training(experiment: str, dataset: str, model: str, r2: float, seconds: float, n: int) -> TrainResult:
    rmse, mae = 10.0 * (1.0 - r2) + 1.0, 8.0 * (1.0 - r2) + 0.5
    return TrainResult(
        run_id=f"run{n:04d}", experiment_id="1", experiment=experiment, dataset=dataset, model=model,
        params={}, metrics={"r2": r2, "rmse": rmse, "mae": mae},
        durations={"fit_s": seconds, "predict_s": 0.01, "total_s": seconds + 0.05},
        model_uri=None, tracking_uri="http://127.0.0.1:1", finished_at=time.time())


@pytest.fixture(scope="session")
def prometheus_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusStack]:
    """One real Prometheus for the session, scraping a real exporter that published trainings."""
    from mlops_local.metrics.exporter import ModelMetricsExporter
    from mlops_local.metrics.promapi import PrometheusClient
    from mlops_local.metrics.registry import build_registry
    home = tmp_path_factory.mktemp("prometheus-home")
    env = stack_env(home)
    registry = build_registry()
    server = serve_metrics(registry, env)
    settings = Settings.from_env(env)
    exporter = ModelMetricsExporter(registry, settings)
    first = [_training("mlops-local", "co2_canada", "random_forest", 0.91, 1.5, 1),
             _training("mlops-local", "co2_canada", "ridge", 0.83, 0.2, 2),
             _training("team-a", "co2_emissions_canada.csv", "random_forest", 0.88, 2.5, 3),
             _training("team-a", "diabetes", "gradient_boosting", 0.42, 0.9, 4)]
    for result in first:
        exporter.observe(result)
    prom = start_service("prometheus", env, home / "logs")
    client = PrometheusClient.from_settings(settings)
    since = time.time() - 1
    try:
        wait_for(lambda: len(client.query("mlops_model_r2")) == len(first), "the first trainings")
        # More trainings while Prometheus watches, so counters and the histogram really increase.
        second = [_training("mlops-local", "co2_canada", "random_forest", 0.93, 1.8, 5),
                  _training("team-a", "diabetes", "gradient_boosting", 0.47, 1.1, 6)]
        for result in second:
            exporter.observe(result)
        latest = {(t.experiment, t.dataset, t.model): t for t in first + second}
        wait_for(lambda: sorted(s.value for s in client.query("mlops_model_r2"))
                  == sorted(t.metrics["r2"] for t in latest.values()), "the second trainings")
        wait_for(lambda: client.query('count_over_time(up{job="mlops-local"}[1m])')[0].value >= 6,
                  "six scrapes")
        yield PrometheusStack(env=env, settings=settings, client=client,
                              metrics_target=settings.metrics_target, trainings=list(latest.values()),
                              since=since, until=time.time())
    finally:
        prom.stop()
        server.stop()
        exporter.stop()


# -- Streamlit UI (AppTest): the app's settings point at the session's MLflow server --------------

@pytest.fixture
def ui_env(mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The session MLflow env applied to os.environ (get_settings() re-read); runtime stopped after."""
    from mlops_local.runtime import shutdown_runtime
    from mlops_local.settings import get_settings

    apply_stack_env(monkeypatch, mlflow_env)
    yield mlflow_env
    shutdown_runtime()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ui_trained_run(mlflow_env: dict[str, str]) -> TrainResult:
    """One real random_forest training on co2_canada (10 trees) in experiment 'ui-tests'."""
    from mlops_local.ml.training import train
    from mlops_local.ml.types import DatasetSpec, TrainRequest

    request = TrainRequest(DatasetSpec("co2_canada"), "random_forest", params={"n_estimators": 10},
                           experiment="ui-tests", source="ui")
    return train(request, Settings.from_env(mlflow_env))


@pytest.fixture(scope="session", autouse=True)
def no_stray_mlflow_store() -> Iterator[None]:
    """Fail if anything wrote MLflow's default store (./mlflow.db, ./mlruns): a URI was not passed in."""
    root = Path(__file__).resolve().parents[1]
    strays = [root / "mlflow.db", root / "mlruns", Path.cwd() / "mlflow.db", Path.cwd() / "mlruns"]
    before = {p for p in strays if p.exists()}
    yield
    appeared = {p for p in strays if p.exists()} - before
    assert not appeared, f"tests wrote MLflow's default local store: {sorted(map(str, appeared))}"


def running_runs_left(root: Path) -> list[str]:
    """Runs the product opened (they carry an owner) still RUNNING in any MLflow store under ``root``
    (SQLite files; the PostgreSQL cluster's databases are read as it stops, see tests/postgres.py)."""
    import contextlib
    import sqlite3

    from tests.postgres import RUNNING_QUERY as query

    found = []
    for db in sorted(root.rglob("mlflow.db")):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
                rows = con.execute(query).fetchall()
        except sqlite3.Error:
            continue  # not a store: a test's corrupt copy, or one never initialised
        found += [f"{db}: run {run_id} ({name}, owner pid {pid})" for run_id, name, pid in rows]
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Once the whole session ends (servers stopped), no store of any test holds a RUNNING run."""
    yield
    from tests.postgres import LEFT_RUNNING

    left = running_runs_left(tmp_path_factory.getbasetemp()) + LEFT_RUNNING
    assert not left, "runs left RUNNING after the session:\n" + "\n".join(left)


@pytest.fixture(autouse=True)
def restore_main_module() -> Iterator[None]:
    """AppTest leaves the app script as ``__main__``; spawned workers (Dask's nanny) would re-run it."""
    import sys

    original = sys.modules.get("__main__")
    yield
    if original is not None and sys.modules.get("__main__") is not original:
        sys.modules["__main__"] = original


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """An in-process ``mlops-local`` call configures logging onto pytest's captured stderr; put the
    root logger back so later tests do not log into that closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def app_stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This process set up as the UI process of a stack on free ports (services not started)."""
    from mlops_local import runtime
    from mlops_local.settings import get_settings

    runtime.shutdown_runtime()
    env = stack_env(tmp_path / "home")
    apply_stack_env(monkeypatch, env)
    yield env
    runtime.shutdown_runtime()
    get_settings.cache_clear()

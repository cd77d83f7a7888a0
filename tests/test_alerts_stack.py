"""Alerts on the real stack: MLflow, a syncing exporter, `serve prometheus` with the rendered rules, the UI.

A good then a bad training of the same model on the same dataset must end with ModelQualityRegression
firing in Prometheus' /api/v1/alerts and listed on the Monitoring page (rules rendered with a short
`for:` through MLOPS_ALERT_FOR_SCALE). With Alertmanager installed, Prometheus also delivers it there.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mlops_local.metrics.promapi import PrometheusClient
from mlops_local.ml.types import TrainResult
from mlops_local.services import alertmanager
from mlops_local.settings import Settings
from mlops_local.ui.common import service_statuses
from tests.apptest import APP
from tests.services import (
    Service,
    apply_stack_env,
    free_port,
    serve_metrics,
    stack_env,
    start_service,
    wait_for,
)

pytestmark = pytest.mark.integration

FOR_SCALE = "0.05"  # ModelQualityRegression's 60 s `for:` becomes 3 s


@dataclass
class AlertStack:
    env: dict[str, str]
    client: PrometheusClient
    experiment: str
    good: TrainResult
    bad: TrainResult
    alertmanager: Service | None


def _train(settings: Settings, experiment: str, params: dict[str, object]) -> TrainResult:
    from mlops_local.ml.training import train
    from mlops_local.ml.types import DatasetSpec, TrainRequest

    request = TrainRequest(DatasetSpec("co2_canada"), "random_forest", params=params, experiment=experiment,
                           log_model=False)
    return train(request, settings)


def _regressions(client: PrometheusClient, experiment: str, state: str = "firing") -> list[dict]:
    return [a for a in client.alerts() if a["labels"].get("alertname") == "ModelQualityRegression"
            and a["labels"].get("experiment") == experiment and a.get("state") == state]


@pytest.fixture(scope="module")
def alert_stack(mlflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStack]:
    from mlops_local.metrics.exporter import ModelMetricsExporter
    from mlops_local.metrics.registry import build_registry

    home = tmp_path_factory.mktemp("alerts-home")
    env = stack_env(home, MLOPS_ALERT_FOR_SCALE=FOR_SCALE)
    env["MLFLOW_TRACKING_URI"] = mlflow_env["MLFLOW_TRACKING_URI"]
    experiment = f"alerts-{uuid.uuid4().hex[:8]}"
    registry = build_registry()
    server = serve_metrics(registry, env)
    settings = Settings.from_env(env)
    # The exporter as the UI process runs it: syncing from the real MLflow (this experiment only).
    exporter = ModelMetricsExporter(registry, settings, experiments=[experiment])
    services: list[Service] = []
    try:
        manager = None
        if alertmanager.find_binary() is not None:
            manager = start_service("alertmanager", env, home / "logs")
            services.append(manager)
        services.append(start_service("prometheus", env, home / "logs"))
        client = PrometheusClient.from_settings(settings)
        good = _train(settings, experiment, {"n_estimators": 10})
        exporter.start()
        wait_for(lambda: any(s.labels.get("experiment") == experiment
                             for s in client.query("mlops_model_r2")), "the good training in Prometheus")
        bad = _train(settings, experiment, {"n_estimators": 2, "max_depth": 1})
        yield AlertStack(env, client, experiment, good, bad, manager)
    finally:
        for service in reversed(services):
            service.stop()
        server.stop()
        exporter.stop()


def test_a_worse_training_fires_model_quality_regression(alert_stack: AlertStack) -> None:
    good, bad = alert_stack.good.metrics["r2"], alert_stack.bad.metrics["r2"]
    assert good - bad > 0.02, (good, bad)  # the premise: the second training really is worse
    client = alert_stack.client
    # The good training alone: its own best, nothing below it.
    assert not _regressions(client, alert_stack.experiment, "firing")
    wait_for(lambda: bool(_regressions(client, alert_stack.experiment)), "ModelQualityRegression firing",
             timeout=90)
    (alert,) = _regressions(client, alert_stack.experiment)
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["model"] == "random_forest" and alert["labels"]["dataset"] == "co2_canada"
    assert float(alert["value"]) == pytest.approx(good - bad, abs=1e-9)
    assert f"R² {good - bad:.4f} below the best" in alert["annotations"]["summary"]
    assert "Runs page" in alert["annotations"]["action"]


def test_the_monitoring_page_and_the_sidebar_list_the_firing_alert(
        alert_stack: AlertStack, ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    wait_for(lambda: bool(_regressions(alert_stack.client, alert_stack.experiment)),
             "ModelQualityRegression firing", timeout=90)
    apply_stack_env(monkeypatch, {**alert_stack.env, "MLOPS_METRICS_PORT": str(free_port())})
    service_statuses.clear()  # cached for a few seconds, whichever stack the last test ran
    # The sidebar of the first page a session opens (AppTest drops sidebar elements on page switches).
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    sidebar = [m.value for m in at.sidebar.markdown]
    assert any("1 alert firing, worst: warning" in t for t in sidebar), sidebar
    at.switch_page("views/monitoring.py").run()
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    heading = next(t for t in texts if "**ModelQualityRegression**" in t)
    assert "warning" in heading and "model=random_forest" in heading and "since" in heading
    assert any("below the best on that dataset" in t for t in texts)
    assert any("What to do: Compare the run" in c.value for c in at.caption)
    link = f"{alert_stack.client.base_url}/alerts"
    assert any(link in c.value for c in at.caption), [c.value for c in at.caption]


@pytest.mark.skipif(alertmanager.find_binary() is None,
                    reason="Alertmanager not installed (Debian: apt-get install prometheus-alertmanager)")
def test_prometheus_delivers_the_alert_to_alertmanager(alert_stack: AlertStack) -> None:
    assert alert_stack.alertmanager is not None
    url = f"{alert_stack.alertmanager.url}/api/v2/alerts"

    def delivered() -> bool:
        with urllib.request.urlopen(url, timeout=5) as resp:
            alerts = json.load(resp)
        return any(a["labels"].get("alertname") == "ModelQualityRegression"
                   and a["labels"].get("experiment") == alert_stack.experiment for a in alerts)

    wait_for(delivered, "ModelQualityRegression in Alertmanager", timeout=90)
    config = Path(alert_stack.env["MLOPS_HOME"]) / "prometheus" / "prometheus.yml"
    assert f"127.0.0.1:{alert_stack.env['MLOPS_ALERTMANAGER_PORT']}" in config.read_text()


def test_the_exporter_publishes_the_champions_r2_and_follows_the_alias(mlflow_settings: Settings) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_local.metrics.champions import ChampionReader
    from mlops_local.metrics.exporter import ModelMetricsExporter
    from mlops_local.metrics.registry import build_registry
    from mlops_local.metrics.sync import MlflowSync, make_client
    from mlops_local.tracking import new_client
    from tests.test_sync import RunSpec, log_run, new_experiment, now_ms

    writer = new_client(mlflow_settings.effective_tracking_uri, mlflow_settings)
    experiment, experiment_id = new_experiment(writer, "champion")
    older = log_run(writer, experiment_id, RunSpec("co2", "ridge", 0.8, now_ms() - 5000))
    newer = log_run(writer, experiment_id, RunSpec("co2", "random_forest", 0.9, now_ms()))
    name = f"{experiment}-model"
    writer.create_registered_model(name)
    for run_id in (older, newer):
        writer.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    writer.set_registered_model_alias(name, "champion", "1")
    client = make_client(mlflow_settings)  # the sync's own client, as the UI process makes it
    registry = build_registry()
    exporter = ModelMetricsExporter(registry, mlflow_settings, client=client, experiments=[experiment])
    sync = MlflowSync(client, exporter, experiments=[experiment],
                      champions=ChampionReader(client, "champion"))

    def champions() -> dict[tuple[str, str, str], float]:
        families = text_string_to_metric_families(generate_latest(registry).decode())
        samples = next(f for f in families if f.name == "mlops_champion_r2").samples
        return {(s.labels["version"], s.labels["experiment"], s.labels["dataset"]): s.value
                for s in samples if s.labels["registered_model"] == name}

    sync.sync_once()
    assert champions() == {("1", experiment, "co2"): 0.8}
    writer.set_registered_model_alias(name, "champion", "2")  # a promotion
    sync.sync_once()
    assert champions() == {("2", experiment, "co2"): 0.9}
    writer.delete_registered_model_alias(name, "champion")
    sync.sync_once()
    assert champions() == {}
    assert client.plain  # the registry was read over plain HTTP throughout


def test_the_sidebar_is_quiet_when_prometheus_is_down_or_nothing_fires(
        app_stack_env: dict[str, str], tmp_path: Path) -> None:
    from mlops_local.ui.common import alerts_firing

    def sidebar() -> list[str]:
        service_statuses.clear()  # both are cached for a few seconds
        alerts_firing.clear()
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        assert not at.exception, at.exception
        return [c.value for c in at.sidebar.caption] + [m.value for m in at.sidebar.markdown]

    assert "Alerts: unknown (Prometheus is not answering)" in sidebar()
    # Long `for:` so that nothing (e.g. MetricsTargetDown: this /metrics is not served) fires meanwhile.
    prom = start_service("prometheus", {**app_stack_env, "MLOPS_ALERT_FOR_SCALE": "100"}, tmp_path / "logs")
    try:
        wait_for(lambda: any(g for g in json.load(urllib.request.urlopen(
            f"{prom.url}/api/v1/rules", timeout=5))["data"]["groups"]), "the rules loaded")
        lines = sidebar()
        assert "Alerts: none firing" in lines and not any("firing, worst" in line for line in lines), lines
    finally:
        prom.stop()

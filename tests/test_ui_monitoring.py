"""AppTest of the Monitoring page against a real Prometheus: health, charts, CSV export, errors."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from mlops_local.metrics.panels import JOB
from mlops_local.metrics.promapi import PrometheusClient
from mlops_local.settings import Settings, get_settings
from tests.apptest import open_app
from tests.services import apply_stack_env, free_port, stack_env, start_service


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **overrides: str) -> None:
    """Point the app's settings at ``env`` (the app's own /metrics on a port of its own)."""
    apply_stack_env(monkeypatch, {**env, **overrides, "MLOPS_METRICS_PORT": str(free_port())})


def open_monitoring() -> AppTest:
    return open_app("monitoring")


@pytest.fixture
def app_on_stack(prometheus_stack, ui_env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    use_env(monkeypatch, prometheus_stack.env, MLFLOW_TRACKING_URI=ui_env["MLFLOW_TRACKING_URI"])
    yield prometheus_stack


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real Prometheus whose scrape target (nothing listens there) is down and has no data."""
    home = tmp_path_factory.mktemp("empty-prometheus")
    env = stack_env(home)
    service = start_service("prometheus", env, home / "logs")
    client = PrometheusClient.from_settings(Settings.from_env(env))
    deadline = time.monotonic() + 30
    while not any(t.job == JOB and t.health != "unknown" for t in client.targets()):  # first scrape failed
        assert time.monotonic() < deadline, "Prometheus never tried its scrape target"
        time.sleep(0.2)
    yield env
    service.stop()


def test_health_latest_values_and_charts(app_on_stack) -> None:
    at = open_monitoring()
    assert not at.error, [e.value for e in at.error]
    assert any("is up" in s.value for s in at.success)
    latest = next(d.value for d in at.dataframe if "R²" in d.value.columns)
    expected = {(t.dataset, t.model): t.metrics["r2"] for t in app_on_stack.trainings}
    shown = {(r["dataset"], r["model"]): r["R²"] for r in latest.to_dict("records")}
    assert shown == pytest.approx(expected)
    assert len(at.get("plotly_chart")) == 2

    at.multiselect(key="monitoring_models").set_value(["ridge"]).run()
    latest = next(d.value for d in at.dataframe if "R²" in d.value.columns)
    assert set(latest["model"]) == {"ridge"}


def test_export_writes_the_file_and_offers_it(app_on_stack) -> None:
    settings = get_settings()
    before = set(settings.exports_dir.glob("mlops-metrics-*.csv"))  # the stack is shared with other tests
    at = open_monitoring()
    at.text_input(key="monitoring_export_step").set_value("5s")
    at.button(key="monitoring_export").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "Wrote" in at.success[-1].value
    files = sorted(set(settings.exports_dir.glob("mlops-metrics-*.csv")) - before)
    assert len(files) == 1
    with files[0].open() as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"time", "metric", "experiment", "dataset", "model", "value"}
    r2_values = {float(r["value"]) for r in rows if r["metric"] == "mlops_model_r2"}
    assert {t.metrics["r2"] for t in app_on_stack.trainings} <= r2_values
    assert at.get("download_button")


def test_bad_step_is_a_message(app_on_stack) -> None:
    at = open_monitoring()
    at.text_input(key="monitoring_export_step").set_value("soon")
    at.button(key="monitoring_export").click().run()
    assert not at.exception, at.exception
    assert at.error and "'soon' is not a duration" in at.error[0].value
    assert not at.get("download_button")


def test_prometheus_down_is_a_message(ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch, ui_env, MLOPS_PROMETHEUS_PORT=str(free_port()))
    at = open_monitoring()
    assert at.error and "Prometheus is not reachable" in at.error[0].value
    assert not at.get("plotly_chart")


def test_target_down_and_no_data(ui_env: dict[str, str], empty_prometheus: dict[str, str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use_env(monkeypatch, empty_prometheus, MLFLOW_TRACKING_URI=ui_env["MLFLOW_TRACKING_URI"])
    at = open_monitoring()
    assert not at.exception, at.exception
    assert any("has no model metrics yet" in i.value for i in at.info)
    assert any(e.value.startswith("Scrape target") and " is down" in e.value for e in at.error)
    at.button(key="monitoring_export").click().run()
    assert at.error and "no mlops metrics" in at.error[-1].value

"""AppTest of the Serving page against a real model service, MLflow and Prometheus: the service down,
up with no model (then Reload takes a registered one), serving with traffic, and sample traffic sent
from the page."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mlops_local import runs
from mlops_local.ui import traffic
from tests.apptest import open_app
from tests.services import MLOPS, apply_stack_env, free_port, start_service, wait_for

TRAFFIC_KEY = "serving_traffic_job"


def open_serving() -> AppTest:
    return open_app("serving")


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def sidebar_model() -> str:
    """The model service's line in the sidebar of a new session (AppTest keeps a session's first sidebar)."""
    from mlops_local.ui import common

    common.service_statuses.clear()  # cached for a few seconds, whatever the settings
    at = open_app()
    return next(m.value for m in at.sidebar.markdown if m.value.startswith(("model", "[model]")))


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **overrides: str) -> None:
    """The app's settings on ``env`` (its own /metrics on a port of its own)."""
    apply_stack_env(monkeypatch, {**env, **overrides, "MLOPS_METRICS_PORT": str(free_port())})


@pytest.fixture
def on_stack(served_stack, ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    use(monkeypatch, served_stack.env)
    yield served_stack


def test_service_down_says_how_to_start_it(served_stack, ui_env, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    use(monkeypatch, served_stack.env, MLOPS_SERVE_PORT=str(port))
    at = open_serving()
    (warning,) = [w.value for w in at.warning if "model service" in w.value]
    assert f"not running at http://127.0.0.1:{port}" in warning and "mlops-local serve model" in warning
    assert not [b for b in at.button if b.key == "serving_reload"]  # nothing to reload
    assert any("needs a served model" in c.value for c in at.caption)
    assert sidebar_model() == "model :orange-badge[down]"
    assert not at.error, [e.value for e in at.error]  # Prometheus is up: its part of the page renders


@pytest.fixture
def modelless_service(served_stack, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A second model service for an alias no model has (it checks the registry only on Reload)."""
    env = dict(served_stack.env, MLOPS_SERVE_PORT=str(free_port()),
               MLOPS_SERVE_ALIAS=f"nobody-{uuid.uuid4().hex[:8]}", MLOPS_HOME=str(tmp_path / "home"))
    service = start_service("model", env, tmp_path / "logs")
    yield env
    service.stop()


def test_no_model_then_reload_takes_the_registered_one(served_stack, modelless_service, ui_env,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    alias = modelless_service["MLOPS_SERVE_ALIAS"]
    use(monkeypatch, modelless_service)
    at = open_serving()
    (info,) = [i.value for i in at.info if "no model yet" in i.value]
    assert f"alias '{alias}'" in info and "Runs" in info and "Register" in info
    assert sidebar_model() == "model :blue-badge[no model]"
    at.button(key="serving_reload").click().run()
    assert any(f"Reload: no model yet: no registered model has alias '{alias}'" in i.value for i in at.info)

    name = f"reloaded-{uuid.uuid4().hex[:6]}"
    version = str(runs.register_model(served_stack.registry, served_stack.run_id, name, alias).version)
    at.button(key="serving_reload").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == [f"Reload: now serving {name} version {version}"]
    assert (metric(at, "Model"), metric(at, "Version"), metric(at, "Alias")) == (name, version, alias)
    at.button(key="serving_reload").click().run()
    unchanged = f"{name}@{alias} still points at version {version}: nothing to load"
    assert any(unchanged in i.value for i in at.info)


def test_status_command_lists_the_model_service(served_stack, modelless_service) -> None:
    for env, state in ((served_stack.env, "up"), (modelless_service, "no model")):
        out = subprocess.run([*MLOPS, "status"], env=env, capture_output=True, text=True, timeout=60)
        (row,) = [line for line in out.stdout.splitlines() if line.startswith("model ")]
        # columns: name (11), state (14), url
        assert row[12:26].rstrip() == state and f":{env['MLOPS_SERVE_PORT']} " in row, row
        assert row.endswith("(optional)") and out.returncode == 1, row  # the UI and /metrics are not started


def test_serving_with_traffic_shows_the_model_and_its_numbers(on_stack) -> None:
    on_stack.send(ok=20, bad=2)
    at = open_serving()
    assert not at.error, [e.value for e in at.error]
    assert (metric(at, "Model"), metric(at, "Version"), metric(at, "Alias")) == \
        (on_stack.name, on_stack.version, on_stack.alias)
    assert float(metric(at, "Requests/s (last minute)")) > 0
    for name in ("p50", "p95", "p99"):
        value = metric(at, f"Latency {name}")
        assert value.endswith(" ms") and float(value.removesuffix(" ms").lstrip("≥ ")) > 0, (name, value)
    failed = metric(at, "Failed (last minute)")
    assert failed.endswith("%") and 0 < float(failed.removesuffix("%")) < 100
    charts = {c.proto.id for c in at.get("plotly_chart")}
    assert len(charts) >= 4, charts  # requests, latency, failed share, predictions
    (shown,) = [c.value for c in at.caption if "predictions in the range" in c.value]
    assert "the training target's share per bucket" in shown
    count = float(shown.split(" predictions")[0].replace(",", ""))
    rows = on_stack.prom.query("sum(increase(mlops_serving_rows_total[15m]))")[0].value
    assert count == pytest.approx(rows, rel=0.05)
    if on_stack.prom.query("mlops_feature_drift_psi"):
        assert metric(at, "Drift window (rows)") != "–"
    else:
        assert any("No drift data yet" in i.value for i in at.info)
    assert sidebar_model() == f"[model]({on_stack.url}/version) :green-badge[up]"


def test_sample_traffic_runs_in_the_background_and_is_counted(on_stack,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "DURATION_S", 3.0)  # the page's 30 s, shortened for the test
    before = on_stack.counted("ok")
    at = open_serving()
    at.selectbox(key="serving_traffic_column").set_value("Engine Size(L)")
    at.number_input(key="serving_traffic_rate").set_value(10)
    at.button(key="serving_traffic_send").click().run()
    assert not at.exception, at.exception
    job = at.session_state[TRAFFIC_KEY]
    assert job.wait(60), "the sample traffic did not end"
    (shift,) = job.shifts
    assert (shift.column, shift.op, shift.value) == ("Engine Size(L)", "scale", 1.3)
    at.run()
    result = job.result
    assert result is not None and result.sent > 0 and result.failed == 0
    assert job.batch == 5 and result.rows == 5 * result.ok  # a few rows per request: PSI needs 100
    assert [s.value for s in at.success][-1].startswith(
        f"Sample traffic in 3 s: {result.sent:,} requests, {result.ok:,} answered, 0 failed")
    wait_for(lambda: on_stack.counted("ok") == before + result.ok, "Prometheus counting the sample traffic")

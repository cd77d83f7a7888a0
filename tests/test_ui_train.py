"""AppTest of the Train page: ready to train on open, live progress, one run per click, error paths."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from mlops_local.ml import training
from mlops_local.ui import jobs
from tests.apptest import open_app
from tests.postgres import on_both_stores

TIMEOUT = 120


def finish(at: AppTest) -> jobs.TrainingJob:
    """Wait for the session's training, then rerun the page as the polling fragment would."""
    job = at.session_state["train_job"]
    assert job.wait(TIMEOUT), "training did not finish"
    at.run()
    assert not at.exception, at.exception
    return job


def test_opens_ready_to_train(ui_env: dict[str, str]) -> None:
    at = open_app(timeout=TIMEOUT)
    assert at.radio(key="train_source").value == "Built-in"
    assert at.selectbox(key="train_dataset").value == "co2_canada"
    assert at.selectbox(key="train_model").value == "random_forest"
    assert at.number_input(key="train_param_random_forest_n_estimators").value == 100
    assert not at.button(key="train_button").disabled


def test_opening_the_ui_warms_up_the_training_stack_once_in_the_background(
        ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_local.ui import common

    monkeypatch.setattr(common, "_warm_thread", None)  # as in a fresh UI process
    monkeypatch.setattr(common, "warmed_in_s", None)
    open_app(timeout=TIMEOUT)
    started = common._warm_thread
    assert started is not None, "opening the app did not start the warm-up"
    thread = common.warm_training_stack()  # later calls return the thread the page started
    assert thread is started and thread.name == "mlops-warm-training"
    open_app(timeout=TIMEOUT)  # another tab
    assert common.warm_training_stack() is thread
    thread.join(TIMEOUT)
    assert not thread.is_alive() and common.warmed_in_s is not None and common.warmed_in_s > 0


@on_both_stores
def test_first_click_trains_and_shows_cards(ui_env: dict[str, str]) -> None:
    at = open_app(timeout=TIMEOUT)
    at.number_input(key="train_param_random_forest_n_estimators").set_value(10)
    at.text_input(key="train_experiment").set_value("ui-train-cards")
    at.button(key="train_button").click()
    at.run()
    assert not at.exception, at.exception
    job = finish(at)
    assert job.error is None, job.error
    labels = {m.label: m.value for m in at.metric}
    assert set(labels) >= {"R²", "RMSE", "MAE"}
    assert float(labels["R²"]) == pytest.approx(job.result.metrics["r2"], abs=1e-4)
    assert [s.state for s in job.steps()] == ["done"] * 6
    assert at.status[0].proto.label.startswith("Trained random_forest on co2_canada in ")
    links = [b.proto.url for b in at.get("link_button")]
    assert any(f"/runs/{job.result.run_id}" in url for url in links)
    assert any("g0.expr=mlops_model_r2" in url for url in links)

    # MLflow 3.17's UI opens a GenAI view (Assistant, traces) unless the link asks for the ML one.
    mlflow_links = [url for url in links if "/#/" in url]
    assert mlflow_links and all(url.endswith("?workflowType=machine_learning") for url in mlflow_links)
    experiment = MlflowClient(ui_env["MLFLOW_TRACKING_URI"]).get_experiment(job.result.experiment_id)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"


class _Gate(threading.Event):
    """Set it to let a gated training fit; ``at_fit`` is set once a training waits at its fit step."""

    def __init__(self) -> None:
        super().__init__()
        self.at_fit = threading.Event()


@pytest.fixture
def gated_training(monkeypatch: pytest.MonkeyPatch) -> _Gate:
    """Real trainings that pause at the fit step until the returned event is set (injected delay)."""
    gate = _Gate()
    real = training.train

    def gated(request, settings, *, progress=None, **kwargs):
        def report(step: str, elapsed: float) -> None:
            if progress is not None:
                progress(step, elapsed)
            if step == "fit":
                gate.at_fit.set()
                gate.wait(TIMEOUT)
        return real(request, settings, progress=report, **kwargs)

    monkeypatch.setattr(training, "train", gated)
    yield gate
    gate.set()


def test_double_click_starts_one_run_and_other_tabs_stay_live(
        ui_env: dict[str, str], gated_training: _Gate) -> None:
    experiment = "ui-double-click"
    at = open_app(timeout=TIMEOUT)
    at.number_input(key="train_param_random_forest_n_estimators").set_value(5)
    at.text_input(key="train_experiment").set_value(experiment)
    at.button(key="train_button").click()
    at.run()
    assert not at.exception, at.exception
    job = at.session_state["train_job"]
    assert job.running
    button = at.button(key="train_button")
    assert button.disabled
    assert any(m.value.startswith("**Training random_forest on co2_canada") for m in at.markdown)
    # The page may be drawn before the worker reaches the fit step (a loaded machine): wait for it.
    assert gated_training.at_fit.wait(TIMEOUT)
    at.run()
    assert any(":blue[:material/pending:] Fit model" in m.value for m in at.markdown)  # no emoji font needed

    # A second click forged past the disabled button (Streamlit discards it server-side; the session's
    # job guard would refuse it anyway, see test_ui_jobs): still the same single job.
    button.proto.disabled = False
    button.click()
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["train_job"] is job
    assert at.button(key="train_button").disabled

    # Another tab renders while this tab's training is still in progress.
    open_app("runs", TIMEOUT)  # renders without an exception
    assert job.running

    gated_training.set()
    finish(at)
    assert job.error is None, job.error
    client = MlflowClient(ui_env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert not at.button(key="train_button").disabled


def test_upload_trains_and_second_run_shows_delta(ui_env: dict[str, str], co2_csv: Path) -> None:
    at = open_app(timeout=TIMEOUT)
    at.radio(key="train_source").set_value("Upload a file").run()
    at.file_uploader(key="train_upload").upload(co2_csv.name, co2_csv.read_bytes(), "text/csv")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_target").value == "CO2 Emissions(g/km)"
    assert "CO2 Emissions(g/km)" not in at.multiselect(key="train_features").value
    assert not at.error
    at.number_input(key="train_param_random_forest_n_estimators").set_value(5)
    at.text_input(key="train_experiment").set_value("ui-upload")
    at.button(key="train_button").click().run()
    first = finish(at)
    assert first.error is None, first.error
    assert first.result.dataset == co2_csv.name
    assert all(m.proto.delta == "" for m in at.metric)  # nothing earlier to compare with

    at.number_input(key="train_param_random_forest_n_estimators").set_value(8)
    at.button(key="train_button").click().run()
    second = finish(at)
    assert second is not first and second.error is None
    r2 = next(m for m in at.metric if m.label == "R²")
    expected = second.result.metrics["r2"] - first.result.metrics["r2"]
    assert float(r2.proto.delta) == pytest.approx(expected, abs=1e-4)

    at.button(key="train_button").click().run()  # the same training again: the same scores
    third = finish(at)
    assert third.error is None and third.result.metrics == second.result.metrics
    for card in at.metric:  # no change reads as no change, not as a red "worse" arrow
        assert card.proto.delta == "±0.0000", card.proto
        assert card.proto.color == 2 and card.proto.direction == 2, card.proto  # neutral grey, no arrow


def test_upload_over_the_limit_is_refused(ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_local.settings import get_settings

    monkeypatch.setenv("MLOPS_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()
    at = open_app(timeout=TIMEOUT)
    at.radio(key="train_source").set_value("Upload a file").run()
    big = b"a,b\n" + b"1,2\n" * 300_000  # 1.2 MB
    at.file_uploader(key="train_upload").upload("big.csv", big, "text/csv").run()
    assert not at.exception, at.exception
    assert "more than the 1 MB allowed" in at.error[0].value
    assert at.button(key="train_button").disabled


def test_unreadable_file_is_refused(ui_env: dict[str, str]) -> None:
    at = open_app(timeout=TIMEOUT)
    at.radio(key="train_source").set_value("Upload a file").run()
    at.file_uploader(key="train_upload").upload("garbage.csv", bytes(range(256)) * 40, "text/csv").run()
    assert not at.exception, at.exception
    assert at.error and "garbage.csv" in at.error[0].value
    assert at.button(key="train_button").disabled


def test_non_numeric_target_is_refused(ui_env: dict[str, str], co2_csv: Path) -> None:
    at = open_app(timeout=TIMEOUT)
    at.radio(key="train_source").set_value("Upload a file").run()
    at.file_uploader(key="train_upload").upload(co2_csv.name, co2_csv.read_bytes(), "text/csv").run()
    at.selectbox(key="train_target").set_value("Make").run()
    assert not at.exception, at.exception
    assert at.error and "Make" in at.error[0].value
    assert at.button(key="train_button").disabled


def test_training_error_is_a_message(ui_env: dict[str, str]) -> None:
    at = open_app(timeout=TIMEOUT)
    at.number_input(key="train_cv").set_value(1)
    at.button(key="train_button").click().run()
    job = finish(at)
    assert job.error is not None and job.result is None
    assert at.error and at.error[0].value == job.error
    assert not at.metric


def test_features_follow_the_target_and_the_run_logs_what_the_chips_show(
        ui_env: dict[str, str], co2_csv: Path) -> None:
    at = open_app(timeout=TIMEOUT)
    at.radio(key="train_source").set_value("Upload a file").run()
    at.file_uploader(key="train_upload").upload(co2_csv.name, co2_csv.read_bytes(), "text/csv").run()
    columns = list(at.selectbox(key="train_target").options)
    old_target = at.selectbox(key="train_target").value
    at.selectbox(key="train_target").set_value("Cylinders").run()
    assert not at.exception, at.exception
    chips = at.multiselect(key="train_features")
    every_other = [c for c in columns if c != "Cylinders"]
    assert chips.value == every_other  # the old target is back, the new one is gone
    assert old_target in chips.options and "Cylinders" not in chips.options
    # A browser keeps its own chips for the same widget unless the server sends the value itself.
    assert chips.proto.set_value and list(chips.proto.raw_values) == every_other
    at.number_input(key="train_param_random_forest_n_estimators").set_value(5)
    at.text_input(key="train_experiment").set_value("ui-features")
    at.button(key="train_button").click().run()
    job = finish(at)
    assert job.error is None, job.error
    run = MlflowClient(ui_env["MLFLOW_TRACKING_URI"]).get_run(job.result.run_id)
    assert run.data.params["target"] == "Cylinders"
    assert run.data.params["features"] == ", ".join(every_other)


def test_an_edited_feature_list_survives_a_target_change_without_the_new_target(
        ui_env: dict[str, str], co2_csv: Path) -> None:
    at = open_app(timeout=TIMEOUT)
    at.radio(key="train_source").set_value("Upload a file").run()
    at.file_uploader(key="train_upload").upload(co2_csv.name, co2_csv.read_bytes(), "text/csv").run()
    at.multiselect(key="train_features").set_value(["Engine Size(L)", "Cylinders", "Fuel Type"]).run()
    at.selectbox(key="train_target").set_value("Cylinders").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="train_features").value == ["Engine Size(L)", "Fuel Type"]


def test_an_out_of_range_hyperparameter_names_its_range_and_blocks_train(ui_env: dict[str, str]) -> None:
    at = open_app(timeout=TIMEOUT)
    trees = at.number_input(key="train_param_random_forest_n_estimators")
    trees.set_value(0).run()
    assert not at.exception, at.exception
    assert at.number_input(key="train_param_random_forest_n_estimators").value == 0  # as typed, not reset
    messages = [e.value for e in at.error]
    assert any("n_estimators" in m and "between 1 and" in m for m in messages), messages
    button = at.button(key="train_button")
    assert button.disabled
    button.proto.disabled = False  # a click forged past the disabled button trains nothing
    button.click().run()
    assert "train_job" not in at.session_state
    at.number_input(key="train_param_random_forest_n_estimators").set_value(3).run()
    assert not at.error and not at.button(key="train_button").disabled


class _GrafanaHealth(BaseHTTPRequestHandler):
    """Answers /api/health as Grafana does (Grafana is not installed on every machine that runs tests)."""

    def do_GET(self) -> None:  # http.server's name
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b'{"database": "ok"}')

    def log_message(self, *args: object) -> None:
        pass


def test_grafana_link_only_when_grafana_answers(
        ui_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_local.services import grafana as grafana_service
    from mlops_local.ui import common

    monkeypatch.setattr(grafana_service, "find_grafana", lambda *args, **kwargs: None)  # not installed
    common.service_statuses.clear()  # statuses are cached for a few seconds
    at = open_app(timeout=TIMEOUT)
    # (AppTest keeps the sidebar of a session's first run only: sidebars are checked on fresh sessions.)
    assert not any("[grafana](" in m.value for m in at.sidebar.markdown)
    assert common.GRAFANA_MISSING in [c.value for c in at.sidebar.caption]
    at.number_input(key="train_param_random_forest_n_estimators").set_value(5)
    at.text_input(key="train_experiment").set_value("ui-grafana")
    at.button(key="train_button").click().run()
    assert finish(at).error is None
    assert "Grafana dashboard" not in [b.proto.label for b in at.get("link_button")]
    assert common.GRAFANA_MISSING in [c.value for c in at.main.caption]

    server = ThreadingHTTPServer(("127.0.0.1", int(ui_env["MLOPS_GRAFANA_PORT"])), _GrafanaHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        common.service_statuses.clear()
        at.run()
        assert not at.exception, at.exception
        assert "Grafana dashboard" in [b.proto.label for b in at.get("link_button")]
        assert common.GRAFANA_MISSING not in [c.value for c in at.main.caption]
        assert any("[grafana](" in m.value for m in open_app(timeout=TIMEOUT).sidebar.markdown)
    finally:
        server.shutdown()
        server.server_close()
        common.service_statuses.clear()

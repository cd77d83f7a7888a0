"""The first sweep of a fresh `serve ui`, in a real browser: every trial runs, no worker re-runs the app.

Workers of the first UI sweep used to re-run the Streamlit app script (multiprocessing re-imports the
parent's ``__main__``, which Streamlit sets to the script of whichever session ran last): they bound
the UI's metrics port, died with PortInUse and took the largest forests with them (BrokenProcessPool).
Later sweeps of the same process were clean, so this test needs a UI process of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_local.ml.types import DEFAULT_EXPERIMENT
from tests.browser import key, open_page, screenshot, wait_idle
from tests.services import Service, process_tree, stack_env, start_service

pytestmark = [pytest.mark.browser, pytest.mark.integration]
TRIALS = 6


@pytest.fixture
def fresh_ui(tmp_path: Path) -> Iterator[tuple[dict[str, str], Service]]:
    """MLflow and a UI process started for this test alone (its first sweep is the one under test)."""
    env = stack_env(tmp_path / "home")
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    mlflow = start_service("mlflow", env, tmp_path / "logs")
    try:
        ui = start_service("ui", env, tmp_path / "logs")
        try:
            yield env, ui
        finally:
            commands = {pid: _command(pid) for pid in process_tree(ui.proc.pid)}
            left = ui.stop()
            assert not left, f"UI processes left running: {[commands.get(pid) for pid in left]}"
    finally:
        mlflow.stop()


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _set_number(page, name: str, value: int) -> None:
    field = page.locator(key(name)).locator("input")
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def test_the_first_sweep_of_a_fresh_ui_runs_every_trial(fresh_ui, browser_page) -> None:
    env, ui = fresh_ui
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"http://127.0.0.1:{env['MLOPS_UI_PORT']}")
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    wait_idle(page)
    open_page(page, "Sweep")
    page.locator(key("sweep_strategy")).get_by_text("random", exact=True).click()
    wait_idle(page)
    _set_number(page, "sweep_trials_n", TRIALS)
    # large forests in the range: the trials that used to be lost
    _set_number(page, "sweep_random_forest_n_estimators_high", 600)
    _set_number(page, "sweep_random_forest_n_estimators_low", 200)
    page.get_by_text(f"{TRIALS} trials, ").wait_for()
    page.locator(key("sweep_start")).locator("button").click()
    page.get_by_text("Sweep finished:").wait_for(timeout=600_000)
    wait_idle(page)
    screenshot(page, "e2e-sweep-first")

    summary = page.locator('[data-testid="stAlert"]', has_text="Sweep finished:").inner_text()
    assert f"{TRIALS} finished, 0 failed" in summary, summary
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id
    trials = client.search_runs([experiment], "tags.sweep_role = 'trial'")
    assert sorted(r.info.status for r in trials) == ["FINISHED"] * TRIALS
    log = ui.log()
    assert "PortInUse" not in log and "BrokenProcessPool" not in log and "Traceback" not in log, log[-3000:]

"""End to end in a real browser on the honcho stack: the Runs page with trainings and a real sweep.

Rows are ticked by clicking their checkboxes in the grid (drawn on a canvas, so by position); the
registration's name follows the ticked run; registering twice names the version; a sweep is one row
that lists its trials when ticked; the table fits 1440 px without scrolling sideways.
"""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect

from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.settings import Settings
from mlops_local.sweep.run import run_sweep
from mlops_local.sweep.spec import SweepSpec
from tests.browser import choose, key, open_page, screenshot, tick_row, wait_idle, wait_script_done

pytestmark = [pytest.mark.browser, pytest.mark.integration]
EXPERIMENT = "e2e-runs"


def _name_is(page, expected: str) -> None:
    """The registration's name field shows ``expected`` (once the rerun the last click started is done)."""
    expect(page.locator(key("runs_register_name")).locator("input")).to_have_value(expected, timeout=60_000)


def _register(page, expected: str, then: str | None = None) -> str:
    """Click Register (then the promotion gate's button ``then``, once the verdict shows it); the message
    shown, which must contain ``expected``."""
    wait_script_done(page)
    page.locator(key("runs_register_button")).locator("button").click()
    if then is not None:
        button = page.locator(key(then)).locator("button")
        expect(button).to_be_enabled(timeout=60_000)
        button.click()
    message = page.locator('[data-testid="stAlertContainer"]').filter(has_text=expected)
    expect(message).to_be_visible(timeout=60_000)
    return message.inner_text()


def _no_sideways_scroll(page) -> None:
    """Neither the page nor any table scrolls sideways at this width."""
    page.locator(".dvn-scroller").first.wait_for()  # the grid's scroll box, once the grid is drawn
    widths = page.evaluate("""() => ({page: [document.documentElement.scrollWidth, window.innerWidth],
        grids: Array.from(document.querySelectorAll('.dvn-scroller'))
                    .map(e => [e.scrollWidth, e.clientWidth])})""")
    assert widths["page"][0] <= widths["page"][1], widths
    assert widths["grids"] and all(scroll <= client + 1 for scroll, client in widths["grids"]), widths


def test_tick_register_and_fold_sweeps(honcho_stack: dict[str, str], browser_page) -> None:
    settings = Settings.from_env(honcho_stack)
    forest = train(TrainRequest(DatasetSpec("co2_canada"), "random_forest", params={"n_estimators": 10},
                                experiment=EXPERIMENT, source="cli"), settings)
    ridge = train(TrainRequest(DatasetSpec("diabetes"), "ridge", experiment=EXPERIMENT, source="cli"),
                  settings)
    sweep = run_sweep(SweepSpec(DatasetSpec("diabetes"), "ridge", strategy="random", trials=4, jobs=1, seed=5,
                                experiment=EXPERIMENT, models="best"), settings)
    assert sweep.status == "FINISHED"
    client = MlflowClient(honcho_stack["MLFLOW_TRACKING_URI"])

    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"http://127.0.0.1:{honcho_stack['MLOPS_UI_PORT']}")
    wait_idle(page)
    open_page(page, "Runs")
    choose(page, "runs_experiment", EXPERIMENT)
    # newest first: the sweep (one row, its trials folded), the ridge, the forest
    page.get_by_text("Page 1 · 3 run(s)").wait_for()
    _no_sideways_scroll(page)
    screenshot(page, "e2e-runs-1-folded")

    # 1. the name follows the ticked run until it is typed; registering twice names the version
    tick_row(page, "runs_table", 2)
    _name_is(page, "co2_canada-random_forest")
    tick_row(page, "runs_table", 2)  # untick the forest, tick the ridge
    tick_row(page, "runs_table", 1)
    _name_is(page, "diabetes-ridge")
    first = _register(page, "as diabetes-ridge version 1", then="runs_promote_button")
    assert "@champion now points at version 1" in first, first
    _register(page, "already diabetes-ridge version 1: no new version was added")
    assert len(client.search_model_versions("name = 'diabetes-ridge'")) == 1
    tick_row(page, "runs_table", 1)  # untick the ridge, tick the forest: a name typed by the user stays
    tick_row(page, "runs_table", 2)
    _name_is(page, "co2_canada-random_forest")
    field = page.locator(key("runs_register_name")).locator("input")
    field.fill("diabetes-ridge")
    field.press("Enter")
    wait_script_done(page)
    tick_row(page, "runs_table", 2)  # untick and tick again: the typed name stays
    tick_row(page, "runs_table", 2)
    _name_is(page, "diabetes-ridge")
    # a co2 forest cannot be scored against the diabetes champion: the gate refuses, forcing moves it
    moved = _register(page, "@champion moved from version 1 to version 2", then="runs_promote_force")
    assert "diabetes-ridge version 2" in moved, moved
    assert "@champion moved from version 1 to version 2" in moved, moved
    assert client.get_model_version_by_alias("diabetes-ridge", "champion").run_id == forest.run_id
    screenshot(page, "e2e-runs-2-registered")

    # 10. ticking the sweep lists its trials (best first); ticked rows drive Compare
    tick_row(page, "runs_table", 2)  # untick the forest
    tick_row(page, "runs_table", 0)
    page.get_by_role("heading", name="Trials of sweep-random-ridge-diabetes").wait_for()
    page.get_by_text("4 trial(s), best r2 first").wait_for()
    page.locator(key("runs_trials_table")).wait_for()
    # a ticked sweep registers its best trial
    expect(page.locator(key("runs_action_run")).locator('input[role="combobox"]')).to_have_value(
        re.compile("^best trial of sweep-random-ridge-diabetes"), timeout=60_000)
    tick_row(page, "runs_trials_table", 0)
    tick_row(page, "runs_trials_table", 1)
    page.locator('[data-testid="stTab"]', has_text="Parallel coordinates").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    _no_sideways_scroll(page)
    screenshot(page, "e2e-runs-3-sweep-compare")

    # the source filter: the sweep only, the two CLI trainings left out
    choose(page, "runs_source", "sweep")
    page.get_by_text("Page 1 · 1 run(s)").wait_for()
    choose(page, "runs_source", "cli")
    page.get_by_text("Page 1 · 2 run(s)").wait_for()
    assert ridge.run_id != forest.run_id

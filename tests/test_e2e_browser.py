"""End to end in a real browser against the whole stack (honcho on free ports): upload, train, runs,
register, predict, monitoring and its CSV export."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import choose, key, metric_value, open_page, screenshot, selected, tick_row, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.integration]
TARGET = "CO2 Emissions(g/km)"


def _train_on_upload(page, co2_csv: Path) -> tuple[float, str]:
    """Upload the CSV, keep its CO2 target, train a small forest; (R² shown, run id from the MLflow link)."""
    page.locator(key("train_source")).get_by_text("Upload a file").click()
    wait_idle(page)
    page.locator(key("train_upload")).locator('input[type="file"]').set_input_files(str(co2_csv))
    page.locator(key("train_target")).wait_for()
    wait_idle(page)
    if selected(page, "train_target") != TARGET:
        choose(page, "train_target", TARGET)
    assert selected(page, "train_target") == TARGET
    trees = page.locator(key("train_param_random_forest_n_estimators")).locator("input")
    trees.fill("10")
    trees.press("Enter")
    wait_idle(page)
    page.locator(key("train_button")).locator("button").click()
    page.locator('[data-testid="stMetricLabel"]', has_text="R²").first.wait_for()
    wait_idle(page)
    r2 = float(metric_value(page, "R²"))
    link = page.get_by_role("link", name="Run in MLflow").get_attribute("href")
    run_id = re.search(r"/runs/([0-9a-f]{32})", link).group(1)
    return r2, run_id


def _scraped(page) -> bool:
    return page.locator("text=has no model metrics yet").count() == 0 and \
        page.locator(".js-plotly-plot").count() >= 2


def test_upload_train_register_predict_monitor_export(honcho_stack: dict[str, str], browser_page,
                                                      co2_csv: Path, tmp_path: Path) -> None:
    page = browser_page
    ui = f"http://127.0.0.1:{honcho_stack['MLOPS_UI_PORT']}"
    page.goto(ui)
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    wait_idle(page)

    # Train: upload the real CSV, CO2 target, random_forest; read R² on the page.
    r2, run_id = _train_on_upload(page, co2_csv)
    assert 0.9 < r2 <= 1.0
    screenshot(page, "e2e-1-train")

    # Runs: the run is listed first; tick it and register it with the alias champion.
    open_page(page, "Runs")
    page.locator(key("runs_table")).wait_for()
    tick_row(page, "runs_table", 0)
    page.locator(key("runs_action_run")).wait_for()
    assert run_id[:8] in selected(page, "runs_action_run")
    name = page.locator(key("runs_register_name")).locator("input")
    expect(name).to_have_value("co2_emissions_canada-csv-random_forest")  # once the tick's rerun drew it
    name.fill("e2e-co2")
    name.press("Enter")
    wait_idle(page)
    page.locator(key("runs_register_button")).locator("button").click()
    page.get_by_text("No champion yet: the candidate wins").wait_for()  # the gate's verdict first
    page.locator(key("runs_promote_button")).locator("button").click()
    page.get_by_text("as e2e-co2 version 1; @champion now points at version 1").wait_for()
    screenshot(page, "e2e-2-runs")

    # Predict: e2e-co2@champion, one row with the training defaults.
    open_page(page, "Predict")
    page.locator(key("predict_registered")).wait_for()
    assert selected(page, "predict_registered") == "e2e-co2@champion"
    page.locator(key("predict_submit")).locator("button").click()
    page.locator('[data-testid="stMetricLabel"]', has_text="Prediction").first.wait_for()
    prediction = float(metric_value(page, "Prediction"))
    assert 50 < prediction < 600  # g/km for a car with median features
    screenshot(page, "e2e-3-predict")

    # Monitoring: after a scrape the series is there; the export produces a CSV holding that R².
    open_page(page, "Monitoring")
    page.get_by_text("is up").first.wait_for()
    deadline = time.monotonic() + 60
    while not _scraped(page):
        assert time.monotonic() < deadline, "Monitoring never showed the R² series"
        time.sleep(1)
        open_page(page, "Monitoring")
    page.locator(key("monitoring_export")).locator("button").click()
    page.get_by_text("Wrote ").first.wait_for()
    with page.expect_download() as download:
        page.locator(key("monitoring_download")).locator("button").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    with saved.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "mlops_model_r2"]
    mine = [float(r["value"]) for r in rows if r["model"] == "random_forest"]
    assert mine, f"no random_forest R² rows in {saved}"
    assert any(abs(value - r2) < 5e-5 for value in mine)  # the page shows R² to 4 decimals
    exported = Path(honcho_stack["MLOPS_HOME"]) / "exports" / saved.name
    assert exported.read_bytes() == saved.read_bytes()
    screenshot(page, "e2e-4-monitoring")

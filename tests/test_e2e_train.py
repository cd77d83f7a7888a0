"""Train page in a real browser on the honcho stack: the feature chips follow the target and the run
trains on exactly those; an out-of-range hyperparameter is named with its range and never replaced."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect

from tests.browser import choose, key, screenshot, selected, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.integration]
TREES = "train_param_random_forest_n_estimators"


def _open_train(page, stack: dict[str, str]) -> None:
    page.goto(f"http://127.0.0.1:{stack['MLOPS_UI_PORT']}")
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    wait_idle(page)


def _type(page, widget: str, text: str) -> None:
    field = page.locator(key(widget)).locator("input")
    field.fill(text)
    field.press("Enter")
    wait_idle(page)


def _train(page) -> dict[str, str]:
    """Click Train, wait for the result cards; the run's logged params (run id from the MLflow link)."""
    page.locator(key("train_button")).locator("button").click()
    page.locator('[data-testid="stMetricLabel"]', has_text="R²").first.wait_for()
    wait_idle(page)
    link = page.get_by_role("link", name="Run in MLflow").get_attribute("href")
    assert link.endswith("?workflowType=machine_learning")  # MLflow's ML view, not its GenAI one
    run_id = re.search(r"/runs/([0-9a-f]{32})", link).group(1)
    return page.context.mlflow.get_run(run_id).data.params


def _chips(page) -> list[str]:
    tags = page.locator(key("train_features")).locator("[data-tag]")
    return [tags.nth(i).get_attribute("aria-label") for i in range(tags.count())]


def test_feature_chips_follow_the_target_and_the_run_trains_on_them(
        honcho_stack: dict[str, str], browser_page, co2_csv: Path) -> None:
    page = browser_page
    page.context.mlflow = MlflowClient(honcho_stack["MLFLOW_TRACKING_URI"])
    with co2_csv.open(newline="") as fh:
        columns = next(csv.reader(fh))
    _open_train(page, honcho_stack)
    page.locator(key("train_source")).get_by_text("Upload a file").click()
    wait_idle(page)
    page.locator(key("train_upload")).locator('input[type="file"]').set_input_files(str(co2_csv))
    page.locator(key("train_features")).wait_for()
    wait_idle(page)
    # The chips arrive with a rerun after the upload; wait for them rather than for an idle moment.
    expect(page.locator(key("train_features")).locator("[data-tag]")).to_have_count(len(columns) - 1)
    old_target = selected(page, "train_target")
    assert _chips(page) == [c for c in columns if c != old_target]

    choose(page, "train_target", "Cylinders")
    every_other = [c for c in columns if c != "Cylinders"]
    # The rerun that follows the choice replaces the chips (wait_idle may look before it starts).
    expect(page.locator(key("train_features")).locator('[data-tag][aria-label="Cylinders"]')).to_have_count(0)
    assert _chips(page) == every_other  # the old target is back, the new one gone
    _type(page, TREES, "5")
    params = _train(page)
    screenshot(page, "e2e-train-features")
    assert params["target"] == "Cylinders"
    assert params["features"] == ", ".join(every_other)
    assert _chips(page) == every_other  # still what was trained


def test_out_of_range_hyperparameter_names_its_range_and_is_never_replaced(
        honcho_stack: dict[str, str], browser_page) -> None:
    page = browser_page
    page.context.mlflow = MlflowClient(honcho_stack["MLFLOW_TRACKING_URI"])
    _open_train(page, honcho_stack)
    # (with a help tooltip Streamlit draws a second, unnamed button element in the container)
    button = page.locator(key("train_button")).get_by_role("button", name="Train", exact=True)
    _type(page, TREES, "0")
    message = page.locator('[data-testid="stAlertContentError"]', has_text="n_estimators")
    message.first.wait_for()
    assert "between 1 and" in message.first.inner_text()
    assert page.locator(key(TREES)).locator("input").input_value() == "0"  # as typed, not reset
    expect(button).to_be_disabled()
    screenshot(page, "e2e-train-out-of-range")

    _type(page, TREES, "3")
    expect(page.locator('[data-testid="stAlertContentError"]')).to_have_count(0)
    expect(button).to_be_enabled()
    assert _train(page)["n_estimators"] == "3"  # the value shown is the value trained

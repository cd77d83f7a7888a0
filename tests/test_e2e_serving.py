"""End to end in a real browser on the honcho stack: a model registered as champion, Reload on the
Serving page takes it, "Send sample traffic" replays rows to the model service, and the page's numbers
and charts fill from Prometheus while it runs."""

from __future__ import annotations

import re
import uuid

import pytest
from mlflow import MlflowClient
from playwright.sync_api import expect

from mlops_local import runs
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest
from mlops_local.settings import Settings
from tests.browser import click_until, key, metric_value, open_page, screenshot, wait_idle, wait_script_done

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_serving_page_with_a_live_model_and_sample_traffic(honcho_stack: dict[str, str],
                                                           browser_page) -> None:
    page = browser_page
    request = TrainRequest(DatasetSpec("co2_canada"), "random_forest", params={"n_estimators": 10},
                           experiment="e2e-serving", source="cli")
    result = train(request, Settings.from_env(honcho_stack))
    name = f"e2e-serving-{uuid.uuid4().hex[:6]}"  # the most recently updated model with the alias: served
    version = runs.register_model(MlflowClient(honcho_stack["MLFLOW_TRACKING_URI"]), result.run_id, name,
                                  "champion").version

    page.goto(f"http://127.0.0.1:{honcho_stack['MLOPS_UI_PORT']}")
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    wait_idle(page)
    open_page(page, "Serving")
    # Reload asks the service to look now (its own poll may have been first: then nothing to load).
    page.locator(key("serving_reload")).get_by_role("button", name="Reload").click()
    page.get_by_text(re.compile(rf"Reload: (now serving {name} version {version}|{name}@champion still "
                                rf"points at version {version})")).wait_for()
    wait_script_done(page)
    assert (metric_value(page, "Model"), metric_value(page, "Version")) == (name, str(version))

    page.get_by_text("Send sample traffic").click()
    click_until(page, page.locator(key("serving_traffic_send")).locator("button"),
                page.get_by_text(re.compile(r"Sending sample traffic|Sample traffic (in|stopped after) ")))
    sending = re.compile(r"Sending sample traffic: \d+ of 30 s · [1-9][\d,]* requests sent")
    page.get_by_text(sending).wait_for()
    # While the traffic runs the numbers refresh every few seconds; they fill once Prometheus scraped it.
    requests = page.locator('[data-testid="stMetric"]', has=page.locator(
        '[data-testid="stMetricLabel"]', has_text="Requests/s (last minute)")).locator(
        '[data-testid="stMetricValue"]')
    expect(requests).to_have_text(re.compile(r"^\d+\.\d\d$"), timeout=60_000)
    expect(requests).not_to_have_text("0.00", timeout=60_000)
    for label in ("Latency p50", "Latency p95", "Latency p99"):
        assert re.fullmatch(r"\d+\.\d ms|≥ 1000 ms", metric_value(page, label)), label
    assert re.fullmatch(r"\d+\.\d%", metric_value(page, "Failed (last minute)"))
    expect(page.get_by_text(re.compile(r"[\d,]+ predictions in the range; grey bars"))).to_be_visible(
        timeout=60_000)
    # requests, latency, failed share, predictions (a refresh may be redrawing them: wait for it)
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")

    page.locator(key("serving_traffic_stop")).locator("button").click()
    page.get_by_text(re.compile(r"Sample traffic stopped after \d+ s: [1-9][\d,]* requests")).wait_for()
    wait_script_done(page)
    screenshot(page, "e2e-serving")

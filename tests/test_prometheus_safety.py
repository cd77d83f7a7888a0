"""The real Prometheus as `serve prometheus` runs it: its API answers only the stack's own pages, an
instant query does not repeat a value through an outage, and the CSV export is inert in a spreadsheet."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from mlops_local.metrics.export import export_csv
from mlops_local.metrics.promapi import PrometheusClient
from mlops_local.metrics.server import MetricsServer
from mlops_local.services.prometheus import LOOKBACK_INTERVALS
from mlops_local.settings import Settings
from tests.services import Service, process_tree, serve_metrics, stack_env, start_service, wait_for

# Label values that open as a formula in a spreadsheet (OWASP CSV injection), one per leading character.
HOSTILE = ("=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd")
LABELS = ("experiment", "dataset", "model")


class HostileSeries:
    """mlops_model_r2 series whose label values start with a formula character, values negative."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("mlops_model_r2", "R2 with hostile labels.", labels=LABELS)
        for n, bad in enumerate(HOSTILE):
            family.add_metric([f"{bad}-exp", f"{bad}-ds", f"{bad}-model"], -0.5 - n)
        family.add_metric(["plain", "co2_canada", "ridge"], 0.75)
        yield family


@dataclass
class Stack:
    """A real Prometheus (1 s scrapes) scraping this process's hostile /metrics."""

    env: dict[str, str]
    settings: Settings
    client: PrometheusClient
    prometheus: Service
    since: float


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("prometheus-safety")
    env = stack_env(home)
    registry = CollectorRegistry()
    registry.register(HostileSeries())
    server: MetricsServer = serve_metrics(registry, env)
    settings = Settings.from_env(env)
    since = time.time() - 1
    prometheus = start_service("prometheus", env, home / "logs")
    client = PrometheusClient.from_settings(settings)
    try:
        wait_for(lambda: len(client.query("mlops_model_r2")) == len(HOSTILE) + 1, "the first scrape")
        yield Stack(env, settings, client, prometheus, since)
    finally:
        prometheus.stop()
        server.stop()


def allowed_origin(settings: Settings, origin: str) -> str | None:
    """Prometheus' Access-Control-Allow-Origin answer to an API call from a page at ``origin``."""
    request = urllib.request.Request(f"{settings.prometheus_url}/api/v1/query?query=up",
                                     headers={"Origin": origin})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        return resp.headers.get("Access-Control-Allow-Origin")


@pytest.mark.integration
def test_only_the_stacks_own_pages_may_read_the_api(stack: Stack) -> None:
    env = stack.env
    ui, grafana = env["MLOPS_UI_PORT"], env["MLOPS_GRAFANA_PORT"]
    for origin in (f"http://127.0.0.1:{ui}", f"http://localhost:{ui}", f"http://127.0.0.1:{grafana}",
                   f"http://localhost:{grafana}"):
        assert allowed_origin(stack.settings, origin) == origin
    for origin in ("https://evil.example", "http://localhost:1234", f"http://evil.example:{ui}",
                   f"http://127.0.0.1:{ui}.evil.example", f"https://127.0.0.1:{ui}", "null"):
        assert allowed_origin(stack.settings, origin) is None, origin


def _instant(settings: Settings, at: float) -> list:
    """mlops_model_r2 evaluated at time ``at`` (a past time, so this is what an export would show)."""
    query = urllib.parse.urlencode({"query": 'mlops_model_r2{model="ridge"}', "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{settings.prometheus_url}/api/v1/query?{query}", timeout=10) as resp:
        return json.load(resp)["data"]["result"]


def scraped_time(settings: Settings) -> float:
    """A recent time at which the series has a value (waiting until Prometheus has scraped a while)."""
    times: list[float] = []

    def has_value() -> bool:
        times.append(time.time() - settings.scrape_interval)
        return bool(_instant(settings, times[-1]))

    wait_for(has_value, "a value one scrape interval back")
    return times[-1]


@pytest.mark.integration
def test_an_outage_of_prometheus_is_a_gap_not_the_last_value_repeated(stack: Stack) -> None:
    """Prometheus frozen (a sleeping laptop, a stopped process) scrapes nothing and writes no staleness
    marker: an instant query inside the gap must come back empty after a few scrape intervals."""
    interval = stack.settings.scrape_interval
    binaries = process_tree(stack.prometheus.proc.pid)  # serve prometheus became the binary (exec)
    before = scraped_time(stack.settings)
    frozen_at = time.time()
    for pid in binaries:
        os.kill(pid, signal.SIGSTOP)
    try:
        gap = (LOOKBACK_INTERVALS + 3) * interval
        while time.time() < frozen_at + gap:  # the outage itself: nothing to wait for but the clock
            time.sleep(0.1)
    finally:
        for pid in binaries:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _instant(stack.settings, time.time()), "scrapes after the outage")
    assert _instant(stack.settings, before), "the value before the outage"
    inside = frozen_at + (LOOKBACK_INTERVALS + 1.5) * interval
    assert _instant(stack.settings, inside) == [], "the last value repeated into the outage"


@pytest.mark.integration
def test_csv_export_neutralises_formula_cells_and_keeps_numbers(stack: Stack, tmp_path: Path) -> None:
    settings = stack.settings.replace(home=tmp_path / "home")
    result = export_csv(stack.client, settings, stack.since, time.time(), 1, metrics=("mlops_model_r2",))
    with result.path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_model = {row["model"]: row for row in rows}
    for n, bad in enumerate(HOSTILE):
        row = by_model[f"'{bad}-model"]
        assert row["experiment"] == f"'{bad}-exp" and row["dataset"] == f"'{bad}-ds"
        assert float(row["value"]) == -0.5 - n  # a negative number stays a number
    assert by_model["ridge"]["experiment"] == "plain" and float(by_model["ridge"]["value"]) == 0.75
    for row in rows:
        for column in ("time", "metric", *LABELS):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), (column, row[column])

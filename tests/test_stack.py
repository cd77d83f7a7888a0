"""The whole stack from the Procfile under honcho, as `bin/start` runs it, on free ports."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import MLOPS, listening_addresses, required_health_urls

pytestmark = pytest.mark.integration



def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


def test_every_service_answers(honcho_stack: dict[str, str]) -> None:
    for name, url in required_health_urls(honcho_stack).items():
        status, _ = _get(url)
        assert status == 200, name
    status, page = _get(f"http://127.0.0.1:{honcho_stack['MLOPS_PROMETHEUS_PORT']}/graph")
    assert status == 200 and b"<title>Prometheus" in page


def test_prometheus_scrapes_the_metrics_target(honcho_stack: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{honcho_stack['MLOPS_PROMETHEUS_PORT']}/api/v1/targets"
    deadline, health = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        targets = json.loads(_get(url)[1])["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health.get("mlops-local") == "up":
            break
        time.sleep(0.5)
    assert health.get("mlops-local") == "up", health
    query = f"http://127.0.0.1:{honcho_stack['MLOPS_PROMETHEUS_PORT']}/api/v1/query?query=mlops_build_info"
    result = json.loads(_get(query)[1])["data"]["result"]
    assert result and result[0]["metric"]["job"] == "mlops-local"


def test_status_command_sees_the_stack_up(honcho_stack: dict[str, str]) -> None:
    out = subprocess.run([*MLOPS, "status"], env=honcho_stack, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert all(" up " in rows[name] for name in ("mlflow", "prometheus", "ui", "metrics")), out.stdout
    # the model service answers: serving the session's champion if a test registered one, else waiting
    assert " up " in rows["model"] or " no model " in rows["model"], out.stdout


@pytest.mark.browser
def test_two_browser_tabs_share_one_metrics_thread(honcho_stack: dict[str, str], chromium) -> None:
    ui = f"http://127.0.0.1:{honcho_stack['MLOPS_UI_PORT']}/"
    log = Path(honcho_stack["MLOPS_HOME"]) / "logs" / "honcho.log"
    contexts = [chromium.new_context() for _ in range(2)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.goto(ui)
            page.get_by_test_id("stSidebar").get_by_text("mlflow").first.wait_for(timeout=60_000)
        pages[0].reload()
        pages[0].get_by_test_id("stSidebar").get_by_text("mlflow").first.wait_for(timeout=60_000)
    finally:
        for context in contexts:
            context.close()
    assert len(listening_addresses(int(honcho_stack["MLOPS_METRICS_PORT"]))) == 1
    text = log.read_text(errors="replace")
    assert "Address already in use" not in text and "already in use" not in text
    status, body = _get(f"http://127.0.0.1:{honcho_stack['MLOPS_METRICS_PORT']}/metrics")
    assert status == 200 and body.count(b"# TYPE mlops_build_info gauge") == 1


def test_a_stack_start_counts_no_sync_error(honcho_stack: dict[str, str]) -> None:
    """The UI starts next to MLflow, so its first syncs find nothing listening: that is not an error."""
    url = f"http://127.0.0.1:{honcho_stack['MLOPS_METRICS_PORT']}/metrics"
    deadline, body = time.monotonic() + 120, ""
    while time.monotonic() < deadline:
        body = _get(url)[1].decode()
        if "mlops_sync_last_success_timestamp_seconds " in body:  # a sync from MLflow has worked
            break
        time.sleep(0.5)
    assert "mlops_sync_last_success_timestamp_seconds " in body
    assert "mlops_sync_errors_total 0.0" in body

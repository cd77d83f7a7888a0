"""Each `serve` command: starts on free ports, binds MLOPS_HOST only, stops on SIGTERM with no orphans."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mlops_local.services import prometheus
from mlops_local.settings import Settings
from tests.services import (
    MLOPS,
    ROOT,
    free_port,
    listening_addresses,
    stack_env,
    start_service,
    wait_until_responds,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["mlflow", "prometheus", "ui"])
def test_serve_starts_healthy_binds_loopback_and_stops_cleanly(name: str, tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    service = start_service(name, env, tmp_path / "logs")
    try:
        port = int(service.url.rsplit(":", 1)[1])
        # 0100007F is 127.0.0.1 in /proc/net/tcp: nothing listens on 0.0.0.0 or other interfaces.
        assert set(listening_addresses(port)) == {"0100007F"}
        if name == "ui":
            metrics_port = int(env["MLOPS_METRICS_PORT"])
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
            assert b"mlops_build_info{" in body and b"process_resident_memory_bytes" in body
            assert set(listening_addresses(metrics_port)) == {"0100007F"}
    finally:
        leftovers = service.stop()
    assert service.proc.returncode == 0, service.log()[-2000:]
    assert not leftovers, f"{name} left processes behind: {leftovers}"


def test_mlflow_server_is_tuned_for_a_desktop(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    service = start_service("mlflow", env, tmp_path / "logs")
    try:
        from tests.services import alive, process_tree

        tree = alive(process_tree(service.proc.pid))
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in tree]
        assert not any(b"huey" in c for c in cmdlines), "job runner consumers should be off"
        # MLflow's app runs under uvicorn in the serve process itself: no CLI parent, no worker child.
        assert len(tree) == 1, f"expected the serve process alone, got {len(tree)}: {cmdlines}"
        assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()
    finally:
        service.stop()


def test_mlflow_in_process_sets_the_environment_mlflow_server_hands_its_workers(tmp_path: Path) -> None:
    """The names are MLflow's private ones, spelled out because importing mlflow.server.constants would
    build MLflow's Flask app before they are set (and without its security middleware)."""
    from mlflow.server import constants

    from mlops_local.services import mlflow_server

    env = mlflow_server.app_environment(Settings(home=tmp_path))
    for name in ("BACKEND_STORE_URI", "REGISTRY_STORE_URI", "ARTIFACT_ROOT", "SERVE_ARTIFACTS",
                 "ARTIFACTS_DESTINATION"):
        assert getattr(constants, f"{name}_ENV_VAR") in env, name


def test_mlflow_refuses_a_foreign_host_and_a_cross_origin_write(tmp_path: Path) -> None:
    """MLflow's security middleware, as `mlflow server` has it by default: a page served elsewhere
    (DNS rebinding, another origin) gets nothing from the tracking server; loopback callers do."""
    import http.client

    env = stack_env(tmp_path / "home")
    service = start_service("mlflow", env, tmp_path / "logs")
    port = int(env["MLOPS_MLFLOW_PORT"])
    search = "/api/2.0/mlflow/experiments/search?max_results=1"

    def status(method: str, path: str, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            body = "{}" if method == "POST" else None
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
            return conn.getresponse().status
        finally:
            conn.close()

    try:
        assert status("GET", search, {"Host": f"127.0.0.1:{port}"}) == 200
        assert status("GET", search, {"Host": f"localhost:{port}"}) == 200
        assert status("GET", search, {"Host": "attacker.example.com"}) == 403
        create = "/api/2.0/mlflow/experiments/create"
        assert status("POST", create, {"Origin": "http://attacker.example.com"}) == 403
    finally:
        service.stop()


@pytest.mark.parametrize("name", ["prometheus", "alertmanager"])
def test_serve_becomes_the_binary_with_no_wrapper_left_waiting(name: str, tmp_path: Path) -> None:
    if name == "alertmanager" and shutil.which("prometheus-alertmanager") is None \
            and shutil.which("alertmanager") is None:
        pytest.skip("Alertmanager is not installed")
    env = stack_env(tmp_path / "home")
    service = start_service(name, env, tmp_path / "logs")
    try:
        from tests.services import alive, process_tree

        # The PID honcho started runs the binary itself (exec): no Python wrapper waiting on a child.
        assert alive(process_tree(service.proc.pid)) == {service.proc.pid}
        exe = Path(f"/proc/{service.proc.pid}/exe").resolve().name
        assert name in exe and "python" not in exe, exe
    finally:
        leftovers = service.stop()
    assert service.proc.returncode == 0, service.log()[-2000:]  # SIGTERM is the binary's clean shutdown
    assert not leftovers


def test_prometheus_web_ui_works_not_only_the_api(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    service = start_service("prometheus", env, tmp_path / "logs")
    try:
        page = urllib.request.urlopen(service.url + "/graph", timeout=5)
        html = page.read().decode()
        assert page.status == 200 and "<title>Prometheus" in html
        # Every script and stylesheet the page loads is served (a page without its JS is not a UI).
        assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css)[^"]*)"', html)
        assert assets, "the UI page references no assets"
        for asset in assets:
            assert urllib.request.urlopen(service.url + asset, timeout=5).status == 200, asset
    finally:
        service.stop()


def test_rendered_prometheus_config_matches_the_repo_file_for_defaults(tmp_path: Path) -> None:
    defaults = Settings.from_env({"MLOPS_HOME": str(tmp_path)})
    assert prometheus.render_config(defaults) == (ROOT / "prometheus.yml").read_text()
    # Always rendered into MLOPS_HOME: rule_files is relative to the config's folder.
    rendered = prometheus.config_path(defaults, alertmanager=False)
    assert rendered.read_text() == prometheus.render_config(defaults)
    custom = defaults.replace(metrics_port=18001, scrape_interval=1.0)
    path = prometheus.config_path(custom, alertmanager=False)
    assert path == tmp_path / "prometheus" / "prometheus.yml"
    assert "127.0.0.1:18001" in path.read_text() and "scrape_interval: 1s" in path.read_text()
    assert (path.parent / "rules" / "mlops-local.rules.yml").is_file()
    assert "127.0.0.1:8001" in (ROOT / "prometheus.yml").read_text()  # the repo file is not edited


@pytest.mark.parametrize("interval", [0.5, 1.0, 2.25])
def test_a_fractional_scrape_interval_renders_a_config_promtool_accepts(interval: float,
                                                                       tmp_path: Path) -> None:
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_SCRAPE_INTERVAL": str(interval)})
    path = prometheus.config_path(settings)  # with the rules it names
    checked = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"scrape_interval: {prometheus.duration(interval)}" in path.read_text()
    assert prometheus.lookback_delta(settings) == prometheus.duration(3 * interval)


def test_port_in_use_gives_one_line_naming_port_and_variable(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["MLOPS_MLFLOW_PORT"])))
        blocker.listen()
        out = subprocess.run([*MLOPS, "serve", "mlflow"], env=env, capture_output=True, text=True,
                             timeout=60)
    port = env["MLOPS_MLFLOW_PORT"]
    assert out.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "MLOPS_MLFLOW_PORT" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_ui_port_conflict_on_metrics_port_names_its_variable(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["MLOPS_METRICS_PORT"])))
        blocker.listen()
        out = subprocess.run([*MLOPS, "serve", "ui"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "MLOPS_METRICS_PORT" in out.stderr and "Traceback" not in out.stderr


def test_status_reports_each_service_and_fails_when_one_is_down(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", PATH="/usr/bin:/bin")
    service = start_service("prometheus", env, tmp_path / "logs")
    try:
        out = subprocess.run([*MLOPS, "status"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        service.stop()
    assert out.returncode == 1
    rows = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert set(rows) == {"mlflow", "prometheus", "ui", "metrics", "model", "grafana"}
    assert " up " in rows["prometheus"] and f":{env['MLOPS_PROMETHEUS_PORT']}" in rows["prometheus"]
    assert " down " in rows["mlflow"]
    assert "not installed" in rows["grafana"]
    assert " down " in rows["model"] and rows["model"].endswith("(optional)")


def test_free_port_helper_returns_an_unused_port() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # would raise if taken


def test_wait_until_responds_fails_fast_when_the_process_dies() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_until_responds(f"http://127.0.0.1:{free_port()}/", timeout=30, proc=proc)

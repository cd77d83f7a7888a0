"""Settings: one table, read from the environment once, every path under MLOPS_HOME."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from mlops_local.settings import SETTINGS, Settings, SettingsError


def test_defaults_match_the_design() -> None:
    s = Settings.from_env({})
    assert s.home == Path(platformdirs.user_data_dir("mlops-local", appauthor=False))
    assert (s.host, s.ui_port, s.mlflow_port, s.prometheus_port, s.grafana_port, s.metrics_port) == (
        "127.0.0.1", 8501, 8080, 9090, 3000, 8001)
    assert s.effective_tracking_uri == "http://127.0.0.1:8080"
    assert all(src == "default" for src in s.sources.values())


def test_environment_overrides_and_sources(tmp_path: Path) -> None:
    s = Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_MLFLOW_PORT": "5001",
                           "MLFLOW_TRACKING_URI": "http://tracking.example:80"})
    assert s.mlflow_port == 5001
    assert s.mlflow_db == tmp_path / "mlflow" / "mlflow.db"
    assert s.backend_store_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert s.artifacts_dir == tmp_path / "mlflow" / "artifacts"
    assert s.prometheus_dir == tmp_path / "prometheus"
    assert s.exports_dir == tmp_path / "exports"
    assert s.effective_tracking_uri == "http://tracking.example:80"
    assert s.sources["mlflow_port"] == "env MLOPS_MLFLOW_PORT"
    assert s.sources["ui_port"] == "default"


@pytest.mark.parametrize(("var", "value", "needle"), [
    ("MLOPS_UI_PORT", "eighty", "MLOPS_UI_PORT='eighty'"),
    ("MLOPS_METRICS_PORT", "70000", "between 0 and 65535"),
    ("MLOPS_SCRAPE_INTERVAL", "-1", "greater than 0"),
    ("MLOPS_CLIENT_NAME", 'ana"s laptop', "MLOPS_CLIENT_NAME=.*letters, digits"),
    ("MLOPS_CLIENT_NAME", "x" * 65, "1 to 64"),
])
def test_invalid_values_name_the_variable(var: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle.replace("(", r"\(")):
        Settings.from_env({var: value})


def test_the_client_name_defaults_to_the_short_host_name_in_the_label_charset(monkeypatch) -> None:
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "ana's box.lab.example")
    assert Settings.from_env({}).client_name == "ana_s_box"
    assert Settings.from_env({"MLOPS_CLIENT_NAME": " build-01 "}).client_name == "build-01"


def test_wildcard_host_is_reached_on_loopback() -> None:
    s = Settings.from_env({"MLOPS_HOST": "0.0.0.0"})
    assert s.mlflow_url == "http://127.0.0.1:8080"
    assert s.metrics_target == "127.0.0.1:8001"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlops_local.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_config_command_prints_every_setting_with_its_source(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MLOPS_HOME": str(tmp_path), "MLOPS_UI_PORT": "9999",
           "MLOPS_GRAFANA_ADMIN_PASSWORD": "s3cret-value"}
    out = _cli("config", env=env)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert set(lines) == {s.env for s in SETTINGS}
    assert "9999" in lines["MLOPS_UI_PORT"] and "(env MLOPS_UI_PORT)" in lines["MLOPS_UI_PORT"]
    assert "(default)" in lines["MLOPS_MLFLOW_PORT"]
    assert "s3cret-value" not in out.stdout  # secrets are masked
    as_json = json.loads(_cli("config", "--json", env=env).stdout)
    assert as_json["MLOPS_HOME"] == {"value": str(tmp_path), "source": "env MLOPS_HOME"}


def test_config_command_rejects_bad_environment_in_one_line(tmp_path: Path) -> None:
    out = _cli("config", env={"PATH": "/usr/bin:/bin", "MLOPS_PROMETHEUS_PORT": "x"})
    assert out.returncode == 2
    assert "MLOPS_PROMETHEUS_PORT='x' is not valid" in out.stderr
    assert "Traceback" not in out.stderr

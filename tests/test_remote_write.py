"""Long-term metrics on paper (issue 16, part 6): MLOPS_PROMETHEUS_REMOTE_WRITE_URL renders a remote_write
block that promtool accepts; its password is basic auth, masked in `config`, and the file is 0600."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from mlops_local.alerts.promtool import require_promtool, run
from mlops_local.services import prometheus
from mlops_local.settings import Settings, SettingsError
from tests.services import MLOPS, ROOT, stack_env

URL = "https://writer:p%40ss@metrics.example.com:9201/api/v1/write"


def test_remote_write_is_rendered_checked_by_promtool_and_keeps_its_password_private(tmp_path: Path) -> None:
    settings = Settings.from_env(stack_env(tmp_path / "home", MLOPS_PROMETHEUS_REMOTE_WRITE_URL=URL))
    path = prometheus.config_path(settings, alertmanager=False)
    config = yaml.safe_load(path.read_text())
    [target] = config["remote_write"]
    assert target["url"] == "https://metrics.example.com:9201/api/v1/write"
    assert target["basic_auth"] == {"username": "writer", "password": "p@ss"}
    assert path.stat().st_mode & 0o077 == 0
    check = run(require_promtool(settings), "check", "config", str(path))
    assert check.ok, check.output


def test_without_the_setting_there_is_no_remote_write(tmp_path: Path) -> None:
    settings = Settings.from_env(stack_env(tmp_path / "home"))
    rendered = prometheus.config_path(settings, alertmanager=False).read_text()
    assert "remote_write" not in yaml.safe_load(rendered)


def test_config_masks_the_password_and_a_bad_url_is_refused(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", MLOPS_PROMETHEUS_REMOTE_WRITE_URL=URL)
    shown = subprocess.run([*MLOPS, "config"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "writer:***@metrics.example.com" in shown.stdout
    assert "p%40ss" not in shown.stdout and "p@ss" not in shown.stdout
    with pytest.raises(SettingsError, match="MLOPS_PROMETHEUS_REMOTE_WRITE_URL=.*http:// or https://"):
        Settings.from_env(stack_env(tmp_path / "home", MLOPS_PROMETHEUS_REMOTE_WRITE_URL="ftp://x/y"))
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(stack_env(tmp_path / "home", MLOPS_PROMETHEUS_REMOTE_WRITE_URL="ftp://u:secret@x/y"))
    assert "secret" not in str(refused.value)

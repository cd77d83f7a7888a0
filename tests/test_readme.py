"""The README stays true: its configuration table lists every setting, and the two commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from mlops_local.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_configuration_table_lists_exactly_the_settings() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, flags=re.M))
    assert documented == {s.env for s in SETTINGS}


def test_quick_start_commands_exist_and_ci_calls_bin_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "bin/start" in quick and "bin/test" in quick
    for script in ("bin/start", "bin/test", ".ci/run"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is not executable"
    assert "bin/test" in (ROOT / ".ci" / "run").read_text()


def test_procfile_lines_are_the_six_serve_commands() -> None:
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line)
    assert {k: v.strip() for k, v in lines.items()} == {
        name: f"mlops-local serve {name}" for name in ("mlflow", "prometheus", "ui", "grafana", "model",
                                                            "alertmanager")}

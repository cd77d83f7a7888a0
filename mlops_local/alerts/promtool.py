"""promtool on the rendered rules and config: `check rules`, `check config` and the rule unit tests."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlops_local.alerts import render
from mlops_local.errors import UserError
from mlops_local.settings import Settings

TIMEOUT = 120.0  # the unit tests evaluate every rule over simulated hours; a second or two in practice


@dataclass(frozen=True)
class Check:
    """One promtool run: what was checked, whether it passed, and promtool's output."""

    what: str
    ok: bool
    output: str


def run(promtool: Path, *args: str, cwd: Path | None = None) -> Check:
    """``promtool ARGS`` (bounded in time), its verdict and output."""
    cmd = [str(promtool), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        return Check(" ".join(args), False, f"promtool gave no verdict within {TIMEOUT:g} s")
    return Check(" ".join(args), done.returncode == 0, (done.stdout + done.stderr).strip())


def check_all(settings: Settings, promtool: Path, folder: Path | None = None) -> list[Check]:
    """Render prometheus.yml, the rules and their tests for ``settings`` (into ``folder``, default a
    temporary one) and run `check config`, `check rules` and `test rules` on them."""
    from mlops_local.services import prometheus

    with tempfile.TemporaryDirectory(prefix="mlops-alerts-") as tmp:
        root = folder or Path(tmp)
        config = prometheus.config_path(settings.replace(home=root))
        rules_dir = config.parent / prometheus.RULES_DIR
        return [
            run(promtool, "check", "config", str(config)),
            run(promtool, "check", "rules", render.RULES_FILE, cwd=rules_dir),
            run(promtool, "test", "rules", render.TESTS_FILE, cwd=rules_dir),
        ]


def require_promtool(settings: Settings) -> Path:
    """The promtool binary, or a UserError saying where it comes from."""
    from mlops_local.services import prometheus

    found = prometheus.find_promtool(settings)
    if found is None:
        raise UserError("promtool not found: it ships with Prometheus (Debian: apt-get install "
                        "prometheus; the release tarball bin/start downloads has it too)")
    return found

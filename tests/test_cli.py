"""The CLI imports only the module of the command it runs, so `serve` and `status` start fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops_local.cli import COMMANDS, _requested_command, build_parser


@pytest.mark.parametrize("argv", [
    ["config"], ["status"], ["serve", "mlflow"], ["--log-level", "INFO", "serve", "ui"],
])
def test_light_commands_do_not_import_sklearn_or_mlflow(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from mlops_local.cli import build_parser\n"
        f"build_parser({argv!r}).parse_args({argv!r})\n"
        "heavy = sorted(m for m in ('sklearn', 'mlflow', 'pandas', 'streamlit') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_help_lists_every_command() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    for name in COMMANDS:
        assert name in help_text


def test_requested_command_skips_global_options() -> None:
    assert _requested_command(["--log-level", "DEBUG", "train", "--model", "x"]) == "train"
    assert _requested_command(["--help"]) is None
    assert _requested_command(["nonsense"]) is None

"""`mlops-local` command line: one subcommand per module in `mlops_local.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mlops_local import __version__
from mlops_local.errors import UserError
from mlops_local.logsetup import configure_logging
from mlops_local.settings import SettingsError, get_settings

log = logging.getLogger(__name__)

COMMAND_MODULES: tuple[str, ...] = (
    "mlops_local.commands.config",
    "mlops_local.commands.status",
    "mlops_local.commands.serve",
    "mlops_local.commands.install",
    "mlops_local.commands.export",
    "mlops_local.commands.grafana_dashboard",
    "mlops_local.commands.train",
    "mlops_local.commands.sweep",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="mlops-local", description="Docker-free MLOps workbench: MLflow, Prometheus, Streamlit."
    )
    parser.add_argument("--version", action="version", version=f"mlops-local {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlops-local` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = get_settings()
        return int(args.func(args, settings) or 0)
    except SettingsError as exc:
        print(f"mlops-local: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"mlops-local: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mlops-local: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

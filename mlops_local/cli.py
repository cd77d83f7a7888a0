"""`mlops-local` command line: one subcommand per module in `mlops_local.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mlops_local import __version__
from mlops_local.errors import UserError, describe_failure
from mlops_local.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_raises
from mlops_local.logsetup import configure_logging
from mlops_local.settings import SettingsError, get_settings
from mlops_local.uris import mask_credentials

log = logging.getLogger(__name__)

# Subcommand -> module with `register(subparsers)`. Only the module of the command being run is
# imported, so `serve` and `status` do not pay for scikit-learn and MLflow imports at start-up.
COMMANDS: dict[str, str] = {
    "config": "mlops_local.commands.config",
    "status": "mlops_local.commands.status",
    "serve": "mlops_local.commands.serve",
    "install": "mlops_local.commands.install",
    "train": "mlops_local.commands.train",
    "sweep": "mlops_local.commands.sweep",
    "export": "mlops_local.commands.export",
    "backup": "mlops_local.commands.backup",
    "restore": "mlops_local.commands.backup",
    "replay": "mlops_local.commands.replay",
    "promote": "mlops_local.commands.promote",
    "grafana-dashboard": "mlops_local.commands.grafana_dashboard",
    "alerts": "mlops_local.commands.alerts",
}


def _requested_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (first non-option word), if it is a known one."""
    skip_next = False
    for word in argv:
        if skip_next:
            skip_next = False
        elif word == "--log-level":
            skip_next = True
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv`` naming a command, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="mlops-local", description="Docker-free MLOps workbench: MLflow, Prometheus, Streamlit."
    )
    parser.add_argument("--version", action="version", version=f"mlops-local {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging with tracebacks (otherwise one line per message and per error)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = _requested_command(argv) if argv is not None else None
    # a module may register several commands (backup and restore): each module once
    for module in dict.fromkeys(m for name, m in COMMANDS.items() if wanted is None or name == wanted):
        importlib.import_module(module).register(subparsers)
    for sub in subparsers.choices.values():  # also after the command: `mlops-local train ... --verbose`
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="debug logging with tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlops-local` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    configure_logging(args.log_level, verbose=args.verbose, mlflow_logs=args.command != "serve")
    settings = None
    try:
        settings = get_settings()
        if args.command == "serve":  # run_foreground handles the signals of a service
            return int(args.func(args, settings) or 0)
        with sigterm_raises():  # `kill` stops a training or a sweep as Ctrl-C does
            return int(args.func(args, settings) or 0)
    except SettingsError as exc:
        print(f"mlops-local: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:  # messages may quote a URI (MLflow's errors do): no password shown
        if exc.__cause__ is not None:  # what it was raised from: details for --verbose
            log.debug("caused by", exc_info=exc.__cause__)
        print(f"mlops-local: {mask_credentials(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("mlops-local: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("mlops-local: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # one line naming the cause; the traceback with --verbose
        log.debug("command failed", exc_info=True)
        print(f"mlops-local: {mask_credentials(describe_failure(exc, settings))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

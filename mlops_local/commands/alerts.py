"""`mlops-local alerts test`: render the alert rules for the current settings and check them with promtool."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("alerts", help="check the alert rules and run their promtool unit tests")
    parser.add_argument("action", choices=("test",),
                        help="test: promtool check config, check rules and test rules on the rendering")
    parser.add_argument("--out", type=Path, default=None,
                        help="render under this folder (as its MLOPS_HOME) and keep it; default: temporary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local.alerts import promtool

    checks = promtool.check_all(settings, promtool.require_promtool(settings), args.out)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} promtool {check.what}")
        if not check.ok:
            print(check.output, file=sys.stderr)
    return 0 if all(check.ok for check in checks) else 1

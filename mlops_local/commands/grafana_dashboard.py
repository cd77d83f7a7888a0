"""`mlops-local grafana-dashboard`: regenerate the provisioned Grafana dashboard from the shared panels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grafana-dashboard", help="regenerate the Grafana dashboard JSON from mlops_local/metrics/panels.py")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file differs from what would be generated")
    parser.add_argument("--out", type=Path, default=None,
                        help="file to write or check (default: the one shipped in the package)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local.grafana import DASHBOARD_FILE
    from mlops_local.grafana.dashboard import dashboard_drift, write_dashboard

    path = args.out.expanduser().absolute() if args.out is not None else DASHBOARD_FILE
    if args.check:
        drift = dashboard_drift(path)
        if drift is None:
            print(f"{path} is up to date")
            return 0
        print(f"{path} differs from the generated dashboard; run `mlops-local grafana-dashboard`:\n{drift}",
              file=sys.stderr)
        return 1
    print(f"wrote {write_dashboard(path)}")
    return 0

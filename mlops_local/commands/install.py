"""`mlops-local install prometheus`: make sure a Prometheus binary is available (used by bin/start)."""

from __future__ import annotations

import argparse

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("install", help="fetch a tool the stack needs")
    parser.add_argument("tool", choices=("prometheus",))
    parser.add_argument("--no-download", action="store_true", help="skip the pinned release download")
    parser.add_argument("--no-apt", action="store_true", help="skip Debian's package")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local.services import prometheus

    path = prometheus.ensure_binary(
        settings, allow_download=not args.no_download, allow_apt=not args.no_apt
    )
    print(path)
    return 0

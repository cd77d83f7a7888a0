"""`mlops-local config`: the effective settings and where each came from."""

from __future__ import annotations

import argparse
import json

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print the effective settings and their sources")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    rows = settings.describe()
    if args.json:
        print(json.dumps({env: {"value": value, "source": src} for env, value, src in rows}, indent=2))
        return 0
    width = max(len(env) for env, _, _ in rows)
    vwidth = max(len(value) for _, value, _ in rows)
    for env, value, source in rows:
        print(f"{env:<{width}}  {value:<{vwidth}}  ({source})")
    return 0

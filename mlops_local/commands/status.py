"""`mlops-local status`: one line per service; exit 1 when a required one is down."""

from __future__ import annotations

import argparse
import json

from mlops_local.health import check
from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="health of each service (exit 1 if one is down)")
    parser.add_argument("--json", action="store_true", help="one JSON object per service")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per check (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    statuses = check(settings, timeout=args.timeout)
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        for s in statuses:
            need = "" if s.required else " (optional)"
            print(f"{s.name:<11} {s.state:<14} {s.url:<32} {s.detail}{need}")
    return 1 if any(s.required and not s.up for s in statuses) else 0

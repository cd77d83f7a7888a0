"""`mlops-local backup` and `mlops-local restore`: one archive with runs, models, history and dashboards."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    backup = subparsers.add_parser(
        "backup", help="write one archive of MLOPS_HOME while the stack runs (runs, models, metrics history)",
        description="A consistent snapshot of this installation while it runs: the MLflow store (SQLite's "
                    "online backup, or pg_dump for PostgreSQL), its artifacts, Prometheus' history (a TSDB "
                    "snapshot) and Grafana's folder, in one .tar.gz with a manifest of versions, counts and "
                    "checksums. The archive holds Grafana's password: it is written readable by you only.")
    backup.add_argument("out", nargs="?", type=Path, default=None,
                        help="archive file (.tar.gz) or folder "
                             "(default: MLOPS_HOME/backups/mlops-backup-<UTC time>.tar.gz)")
    backup.set_defaults(func=run_backup)
    restore = subparsers.add_parser(
        "restore", help="restore a backup archive into an empty MLOPS_HOME",
        description="Check every file of the archive against its manifest, then put it in place in "
                    "MLOPS_HOME (which must be empty or absent) in one step; start the stack afterwards. "
                    "A PostgreSQL backup goes into the empty database MLOPS_BACKEND_STORE_URI names "
                    "(pg_restore, in one transaction).")
    restore.add_argument("archive", type=Path, help="an archive written by `mlops-local backup`")
    restore.add_argument("--force", action="store_true",
                         help="restore over a non-empty MLOPS_HOME: its content is moved aside to "
                              "<MLOPS_HOME>.before-restore-<time>, never deleted (the stack must be stopped)")
    restore.set_defaults(func=run_restore)


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local.backup import backup

    out = args.out.expanduser().absolute() if args.out is not None else None
    result = backup(settings, out)
    counts = result.counts
    print(f"wrote {result.path} ({result.size / 1e6:.1f} MB, {result.files} files) "
          f"in {result.seconds:.1f} s: "
          f"{counts.get('runs', 0)} runs in {counts.get('experiments', 0)} experiments, "
          f"{counts.get('registered_models', 0)} registered models ({counts.get('model_versions', 0)} "
          f"versions, {counts.get('aliases', 0)} aliases); Prometheus history: {result.prometheus}")
    return 0


def run_restore(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local.backup import restore

    result = restore(settings, args.archive.expanduser().absolute(), force=args.force)
    counts = result.counts
    print(f"restored {result.files} files into {result.home}: {counts.get('runs', 0)} runs, "
          f"{counts.get('registered_models', 0)} registered models, {counts.get('aliases', 0)} aliases")
    if result.moved_aside is not None:
        print(f"what was in {result.home} before is in {result.moved_aside}")
    for note in result.notes:
        print(f"note: {note}")
    print("start the stack with bin/start (or honcho start) to see it")
    return 0

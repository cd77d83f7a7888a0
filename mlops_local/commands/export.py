"""`mlops-local export`: the mlops metrics from Prometheus as one CSV (same export as the UI's button)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write the mlops metrics of a recent time range from Prometheus to a CSV file",
        description="Query Prometheus for mlops_model_r2/rmse/mae and mlops_best_r2 over the last --since "
                    "every --step and write one row per timestamp and series (time in ISO 8601 UTC, "
                    "metric, experiment, dataset, model, value). Long ranges are split into chunks "
                    "Prometheus accepts.",
    )
    parser.add_argument("--since", default="1h", help="how far back: 30s, 15m, 1h, 2d ... (default 1h)")
    parser.add_argument("--step", default="15s", help="time between rows of a series (default 15s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV file to write (relative paths: from the current folder); "
                             "default: MLOPS_HOME/exports/mlops-metrics-<start>-<end>.csv")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mlops_local.metrics.export import export_csv, parse_duration
    from mlops_local.metrics.promapi import PrometheusClient

    since = parse_duration(args.since, "--since")
    step = parse_duration(args.step, "--step")
    out = args.out.expanduser().absolute() if args.out is not None else None
    end = time.time()
    result = export_csv(PrometheusClient.from_settings(settings), settings,
                        end - since.total_seconds(), end, step, out=out)
    series = result.frame.groupby(["metric", "experiment", "dataset", "model"]).ngroups
    print(f"wrote {result.rows} rows ({series} series) to {result.path}")
    return 0

"""`mlops-local serve mlflow|prometheus|ui|grafana|model|alertmanager`: one service in the foreground."""

from __future__ import annotations

import argparse

from mlops_local.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run one service in the foreground")
    parser.add_argument("service", choices=("mlflow", "prometheus", "ui", "grafana", "model", "alertmanager"))
    parser.add_argument("--job-execution", action="store_true",
                        help="mlflow: enable MLflow's GenAI job runner (off for a desktop)")
    parser.add_argument("--workers", type=int, default=1, help="mlflow: server workers (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.service == "mlflow":
        from mlops_local.services import mlflow_server

        return mlflow_server.serve(settings, workers=args.workers, job_execution=args.job_execution)
    if args.service == "prometheus":
        from mlops_local.services import prometheus

        return prometheus.serve(settings)
    if args.service == "model":
        from mlops_local.serving import app

        return app.serve(settings)
    if args.service == "alertmanager":
        from mlops_local.services import alertmanager

        return alertmanager.serve(settings)
    if args.service == "grafana":
        from mlops_local.services import grafana

        return grafana.serve(settings)
    from mlops_local.services import ui

    return ui.serve(settings)

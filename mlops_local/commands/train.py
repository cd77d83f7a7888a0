"""`mlops-local train`: one tracked training from the command line (a short table, or --json)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mlops_local import tracking
from mlops_local.commands.dataset_args import add_dataset_arguments, dataset_spec_from_args
from mlops_local.ml.catalog import CATALOG, DEFAULT_MODEL, parse_param_args
from mlops_local.ml.types import DEFAULT_EXPERIMENT, TrainRequest, TrainResult
from mlops_local.settings import Settings
from mlops_local.uris import mask_credentials

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train one model and track it in MLflow",
        description="Train a scikit-learn regressor on a built-in dataset or a CSV/Parquet file and log "
                    "the run (params, metrics, dataset, model, plots) to MLflow.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"one of {', '.join(CATALOG)} (default {DEFAULT_MODEL})")
    parser.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="hyperparameter, e.g. n_estimators=200 (repeatable)")
    parser.add_argument("--test-size", type=float, default=0.2, metavar="FRACTION",
                        help="share held out for testing, between 0 and 1 (default 0.2)")
    parser.add_argument("--seed", type=int, default=42, metavar="N",
                        help="random seed for split and model (default 42)")
    parser.add_argument("--cv", type=int, default=0, metavar="K", help="k-fold cross-validation (0 = off)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, metavar="NAME",
                        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run)


def request_from_args(args: argparse.Namespace) -> TrainRequest:
    """The TrainRequest the command line describes (values are validated by train())."""
    return TrainRequest(
        dataset=dataset_spec_from_args(args),
        model=args.model, params=parse_param_args(args.param), test_size=args.test_size, seed=args.seed,
        cv_folds=args.cv, experiment=args.experiment, source="cli",
    )


def result_dict(result: TrainResult, settings: Settings) -> dict[str, object]:
    """The --json object."""
    return {
        "run_id": result.run_id,
        "experiment_id": result.experiment_id,
        "experiment": result.experiment,
        "dataset": result.dataset,
        "model": result.model,
        "metrics": result.metrics,
        "durations": {"fit_s": result.durations["fit_s"], "predict_s": result.durations["predict_s"],
                      "total_s": result.durations["total_s"]},
        "model_uri": result.model_uri,
        "tracking_uri": mask_credentials(result.tracking_uri),
        # True when the server was down and the run went straight into the local store.
        "local_store_fallback": result.tracking_uri != settings.effective_tracking_uri,
        "run_url": tracking.run_url(settings, result.experiment_id, result.run_id),
        "params": result.params,
    }


def _table(result: TrainResult, settings: Settings) -> str:
    rows = [("run", f"{result.run_id} (experiment {result.experiment}, id {result.experiment_id})"),
            ("dataset", result.dataset), ("model", result.model)]
    rows += [(name, f"{value:.4g}") for name, value in result.metrics.items()]
    rows += [("fit", f"{result.durations['fit_s']:.2f} s"), ("total", f"{result.durations['total_s']:.2f} s"),
             ("model uri", result.model_uri or "-"),
             ("mlflow", tracking.run_url(settings, result.experiment_id, result.run_id))]
    if result.tracking_uri != settings.effective_tracking_uri:
        rows.append(("stored in", f"{mask_credentials(result.tracking_uri)} (server not running; shown once "
                                  "it starts)"))
    return "\n".join(f"{name:<13} {value}" for name, value in rows)


def _train_or_fall_back(request: TrainRequest, settings: Settings) -> TrainResult:
    """train(); when the local MLflow server dies during it, the training is done again into the
    local store (the same SQLite file the server used), and says so in one line."""
    from mlflow.exceptions import MlflowException

    from mlops_local.errors import ServiceUnavailable, UserError, first_line, known_cause
    from mlops_local.ml.training import train

    try:
        return train(request, settings)
    except Exception as exc:
        if isinstance(exc, UserError) and not isinstance(exc, ServiceUnavailable):
            raise
        client = None
        if tracking.is_connection_failure(exc):  # not an error of the store itself (disk, database)
            client = tracking.fallback_client(settings, settings.effective_tracking_uri)
        if client is None:  # the server is up (or not ours): the error stands, its cause named
            cause = known_cause(exc, settings)
            if cause is not None:
                raise ServiceUnavailable(cause) from exc
            if isinstance(exc, MlflowException):
                raise ServiceUnavailable(f"MLflow error: {first_line(exc)}") from exc
            raise
        log.debug("MLflow failed during the training", exc_info=True)
    print(f"mlops-local: the MLflow server at {settings.effective_tracking_uri} stopped during the training; "
          f"training again into the local store {settings.store_label}", file=sys.stderr, flush=True)
    return train(request, settings, client=client)


def run(args: argparse.Namespace, settings: Settings) -> int:
    result = _train_or_fall_back(request_from_args(args), settings)
    if args.json:
        print(json.dumps(result_dict(result, settings)))
    else:
        print(_table(result, settings))
    return 0

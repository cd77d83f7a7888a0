"""`mlops-local sweep`: a hyperparameter sweep of one model, trials as child runs of one parent run."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from mlops_local import tracking
from mlops_local.commands.dataset_args import add_dataset_arguments, comma_list, dataset_spec_from_args
from mlops_local.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, sigterm_sets
from mlops_local.ml.catalog import CATALOG, DEFAULT_MODEL, parse_param_args
from mlops_local.ml.types import DEFAULT_EXPERIMENT
from mlops_local.settings import Settings
from mlops_local.sweep import (
    DEFAULT_GRID_POINTS,
    DEFAULT_TRIALS,
    METRICS,
    MODEL_MODES,
    STRATEGIES,
    SweepSpec,
)

EXIT_CANCELLED = EXIT_INTERRUPTED


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="tune one model's hyperparameters: many tracked trainings under one parent run",
        description="Run a grid, seeded random or Optuna TPE search over the model catalog's "
                    "hyperparameter ranges (narrowed with --param-range). Each trial is a child run in "
                    "MLflow; the parent run holds the spec, the best trial and charts; the best trial's "
                    "model is logged (and registered with --register). Trials run in parallel on local "
                    "processes or on a Dask cluster. Ctrl-C or SIGTERM stops the sweep cleanly: running "
                    "trials are marked KILLED (exit 130, or 143 for SIGTERM).",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"one of {', '.join(CATALOG)} (default {DEFAULT_MODEL})")
    parser.add_argument("--strategy", default="random", choices=STRATEGIES,
                        help="grid, random (seeded) or optuna (TPE, seeded) (default random)")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help=f"number of trials (default {DEFAULT_TRIALS}; grid: the whole grid, which must "
                             "not exceed --trials when given)")
    parser.add_argument("--metric", default="r2", choices=tuple(METRICS),
                        help="score to optimise: r2 (max), rmse or mae (min); with --cv the cross-validated "
                             "mean (default r2)")
    parser.add_argument("--param-range", action="append", default=[], metavar="K=LO:HI[:log]",
                        help="narrow a hyperparameter's range (LO:HI, optional :log or :linear) or list "
                             "values (K=a|b|c); must stay inside the catalog's range (repeatable)")
    parser.add_argument("--search", metavar="A,B",
                        help="search only these hyperparameters (default: all that are not fixed with "
                             "--param)")
    parser.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="hold a hyperparameter at a value in every trial (repeatable)")
    parser.add_argument("--grid-points", type=int, default=DEFAULT_GRID_POINTS, metavar="N",
                        help=f"grid values per numeric range (default {DEFAULT_GRID_POINTS}; log-spaced for "
                             "log ranges)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="trials in parallel (default: the number of cores, or the Dask cluster's "
                             "threads)")
    parser.add_argument("--dask-scheduler", metavar="URL",
                        help="run trials on an existing Dask cluster, e.g. tcp://host:8786 (its workers need "
                             "mlops-local installed and must reach the MLflow server)")
    parser.add_argument("--test-size", type=float, default=0.2,
                        help="share held out for testing, between 0 and 1 (default 0.2)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the sampler and of every trial's split and model (default 42)")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="k-fold cross-validation per trial (0 = off)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--register", metavar="NAME", help="register the best model under this name")
    parser.add_argument("--alias", metavar="ALIAS",
                        help="alias to move to the registered version, e.g. champion, through the promotion "
                             "gate: only when the best trial beats the version the alias points at (as "
                             "`mlops-local promote`; the verdict is logged in the 'promotions' experiment)")
    parser.add_argument("--models", default="best", choices=MODEL_MODES,
                        help="which trials log their model, plots and dataset input: best (default: only "
                             "the best trial's, uploaded when the sweep ends), all (every trial's, like "
                             "`train`; 24 random forests can take hundreds of MB) or none (no model or "
                             "plots)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object at the end (progress goes to stderr)")
    parser.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The SweepSpec the command line describes (validated by run_sweep before any run exists)."""
    from mlops_local.sweep import parse_range_args

    search = comma_list(args.search, "--search", "hyperparameter names")
    return SweepSpec(
        dataset=dataset_spec_from_args(args),
        model=args.model, strategy=args.strategy, trials=args.trials, metric=args.metric,
        ranges=parse_range_args(args.param_range), search=search, fixed=parse_param_args(args.param),
        grid_points=args.grid_points, seed=args.seed, test_size=args.test_size, cv_folds=args.cv,
        experiment=args.experiment, jobs=args.jobs, dask_scheduler=args.dask_scheduler,
        models=args.models, register=args.register, alias=args.alias,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params_text(params: dict[str, object], names: list[str]) -> str:
    return " ".join(f"{k}={_value(params.get(k))}" for k in names)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mlflow.exceptions import MlflowException

    from mlops_local.errors import ServiceUnavailable, first_line, known_cause
    from mlops_local.sweep import SweepProgress, run_sweep

    spec = spec_from_args(args)
    out = sys.stderr if args.json else sys.stdout
    searched: list[str] = []

    def on_trial(progress: SweepProgress) -> None:
        trial = progress.outcomes[-1]
        if not searched:
            searched.extend(k for k in sorted(trial.params) if k in (spec.search or trial.params))
        detail = trial.error if trial.status != "FINISHED" else _params_text(trial.params, searched)
        best = _fmt(progress.best.score) if progress.best else "-"
        print(f"[{progress.done}/{progress.total}] trial {trial.number} {trial.status.lower()} "
              f"{progress.score_metric}={_fmt(trial.score)} (best {best})  {detail}", file=out, flush=True)

    cancel = threading.Event()
    try:
        # SIGTERM cancels like Ctrl-C and the Stop button: running trials KILLED, workers stopped.
        with sigterm_sets(cancel) as terminated:
            # This process runs nothing but the sweep, in its only thread: workers may fork (no imports).
            result = run_sweep(spec, settings, cancel=cancel, on_trial=on_trial, start_method="fork")
    except MlflowException as exc:
        raise ServiceUnavailable(known_cause(exc, settings) or f"MLflow error: {first_line(exc)}") from exc
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        counts = result.to_dict()["counts"]
        rows = [("sweep", f"{result.parent_run_id} ({result.status.lower()}, experiment "
                          f"{result.experiment})"),
                ("trials", f"{counts['finished']} finished, {counts['failed']} failed, {counts['killed']} "
                           f"killed of {result.total} ({result.executor}, {result.duration_s:.1f} s)")]
        if result.best is not None:
            rows += [("best trial", f"{result.best.number} run {result.best.run_id}"),
                     (f"best {result.score_metric}", _fmt(result.best.score)),
                     ("best params", _params_text(result.best.params, list(result.best.params)))]
        rows += [("model uri", result.model_uri or "-")]
        if result.registered_version:
            rows.append(("registered", f"{spec.register} version {result.registered_version}"
                                       + (f" (alias {spec.alias})" if result.alias_set else "")))
        rows += [("warning", w) for w in result.warnings]
        rows.append(("mlflow", tracking.run_url(settings, result.experiment_id, result.parent_run_id)))
        print("\n".join(f"{name:<13} {value}" for name, value in rows))
    if result.status == "KILLED":
        return EXIT_TERMINATED if terminated else EXIT_CANCELLED
    if result.status == "FAILED" or (spec.register and not result.registered_version):
        return 1
    return 0

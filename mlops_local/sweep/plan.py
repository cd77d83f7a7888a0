"""A sweep validated before anything runs: search space, strategy, score, dataset name."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from mlops_local import tracking
from mlops_local.errors import UserError
from mlops_local.ml import evaluation
from mlops_local.ml.datasets import LoadedDataset, load_dataset
from mlops_local.runs import validate_registration
from mlops_local.settings import Settings
from mlops_local.sweep.executor import check_jobs
from mlops_local.sweep.samplers import Strategy, make_strategy
from mlops_local.sweep.space import SearchSpace, build_space, check_grid_points
from mlops_local.sweep.spec import METRICS, MODEL_MODES, STRATEGIES, SweepSpec, SweepSpecError, score_key


@dataclass
class Plan:
    """A validated sweep: search space, strategy, score, the dataset's display name (and the dataset
    itself when it was loaded)."""

    spec: SweepSpec
    space: SearchSpace
    strategy: Strategy
    score_metric: str
    higher_is_better: bool
    dataset: str
    jobs: int | None
    data: LoadedDataset | None = None


def plan_sweep(spec: SweepSpec, frame: pd.DataFrame | None = None, *, load: bool = True) -> Plan:
    """Validate ``spec`` (UserError naming the problem) and build its space and strategy."""
    if spec.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {spec.strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if spec.metric not in METRICS:
        raise UserError(f"unknown metric {spec.metric!r}; choose one of: {', '.join(METRICS)}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed < 2**32:
        raise UserError(f"seed must be an integer between 0 and {2**32 - 1}, got {spec.seed!r}")
    if not isinstance(spec.experiment, str) or not spec.experiment.strip():
        raise UserError("experiment name must not be empty")
    if spec.models not in MODEL_MODES:
        raise UserError(f"models must be one of {', '.join(MODEL_MODES)}, got {spec.models!r}")
    jobs = check_jobs(spec.jobs)
    points = check_grid_points(spec.grid_points)
    if spec.alias and not spec.register:
        raise UserError("--alias needs --register NAME (the registered model the alias belongs to)")
    if spec.register:
        if spec.models == "none":
            raise SweepSpecError("--register needs the best model to be logged (--models all or best)",
                                 field="models", reason="register_needs_model")
        validate_registration(spec.register.strip(), (spec.alias or "").strip() or None)
    evaluation.validate_split(10**6, spec.test_size, spec.cv_folds)
    try:
        metric_key, higher = score_key(spec.metric, spec.cv_folds)
    except ValueError:
        raise SweepSpecError(f"metric {spec.metric!r} has no cross-validated version; with --cv use r2 or "
                             "rmse", field="metric", reason="no_cv_metric", metric=spec.metric) from None
    space = build_space(spec.model, spec.ranges, spec.search, spec.fixed)
    strategy = make_strategy(spec.strategy, space, trials=spec.trials, seed=spec.seed, grid_points=points,
                             higher_is_better=higher, parallel=jobs or 2)
    name, data = spec.dataset.name, None
    if load:
        data = load_dataset(spec.dataset, frame)
        evaluation.validate_split(len(data.y), spec.test_size, spec.cv_folds)
        name = data.name
    return Plan(spec, space, strategy, metric_key, higher, name, jobs, data)


def worker_env(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The bounded MLflow client settings workers apply (values set in this process win)."""
    return tuple((k, os.environ.get(k, v)) for k, v in tracking.bounded_client_env(settings).items())

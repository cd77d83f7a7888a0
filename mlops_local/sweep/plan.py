"""A sweep validated before anything runs: search space, trial count, score, dataset name."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_local import tracking
from mlops_local.errors import UserError
from mlops_local.ml import evaluation
from mlops_local.ml.datasets import LoadedDataset, load_dataset
from mlops_local.runs import validate_registration
from mlops_local.settings import Settings
from mlops_local.sweep.space import SearchSpace, build_space
from mlops_local.sweep.spec import (
    DEFAULT_TRIALS,
    METRICS,
    MODEL_MODES,
    STRATEGIES,
    SweepSpec,
    SweepSpecError,
    score_key,
)

MAX_TRIALS = 10_000
MAX_JOBS = 256
MAX_GRID_POINTS = 50


@dataclass
class Plan:
    """A validated sweep: search space, number of trials, score, the dataset's display name (and the
    dataset itself when it was loaded)."""

    spec: SweepSpec
    space: SearchSpace
    total: int
    score_metric: str
    higher_is_better: bool
    dataset: str
    jobs: int | None
    data: LoadedDataset | None = None


def plan_sweep(spec: SweepSpec, frame: pd.DataFrame | None = None, *, load: bool = True) -> Plan:
    """Validate ``spec`` (UserError naming the problem), build its space and count its trials."""
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
    jobs = whole_number("jobs", spec.jobs, 1, MAX_JOBS, optional=True)
    points = whole_number("grid points", spec.grid_points, 2, MAX_GRID_POINTS)
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
    total = count_trials(spec.strategy, space, spec.trials, points)
    name, data = spec.dataset.name, None
    if load:
        data = load_dataset(spec.dataset, frame)
        evaluation.validate_split(len(data.y), spec.test_size, spec.cv_folds)
        name = data.name
    return Plan(spec, space, total, metric_key, higher, name, jobs, data)


def whole_number(name: str, value: object, low: int, high: int, *, optional: bool = False) -> int | None:
    """``value`` as an int between ``low`` and ``high`` (None when ``optional``), or UserError naming it."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise UserError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    return int(value)


def count_trials(strategy: str, space: SearchSpace, trials: object, grid_points: int) -> int:
    """How many trials the sweep runs; a grid larger than ``trials`` is refused (never truncated)."""
    trials = whole_number("trials", trials, 1, MAX_TRIALS, optional=True)
    if strategy != "grid":
        return trials or DEFAULT_TRIALS
    total = space.grid_size(grid_points)
    if trials is not None and total > trials:
        sizes = space.grid_sizes(grid_points)
        fits = next((p for p in range(grid_points - 1, 1, -1) if space.grid_size(p) <= trials), None)
        raise SweepSpecError(
            f"the grid has {total} points ({' x '.join(f'{n} {k}' for k, n in sizes.items())}), "
            f"more than --trials {trials}; search fewer hyperparameters (--search), list fewer values "
            f"(--param-range k=a|b), lower --grid-points, or raise --trials to {total}",
            field="trials", reason="grid_too_large", total=total, trials=trials, sizes=sizes,
            points_that_fit=fits)
    if total > MAX_TRIALS:
        raise UserError(f"the grid has {total} points, more than {MAX_TRIALS}; search fewer "
                        "hyperparameters or lower --grid-points")
    return total


def worker_env(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The bounded MLflow client settings workers apply (values set in this process win)."""
    return tuple((k, os.environ.get(k, v)) for k, v in tracking.bounded_client_env(settings).items())

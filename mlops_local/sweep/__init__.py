"""Hyperparameter sweeps: many tracked trainings of one model as child runs of one parent run.

    from mlops_local.ml.types import DatasetSpec
    from mlops_local.sweep import SweepSpec, run_sweep

    result = run_sweep(SweepSpec(DatasetSpec("co2_canada"), "random_forest", strategy="random",
                                 trials=24, ranges={"n_estimators": "20:200:log"}), settings)

The public API is below; the modules by responsibility: ``spec`` (what a sweep is asked and returns),
``space`` (search spaces from the catalog), ``samplers`` (grid, random, TPE), ``plan`` (validation),
``executor`` (local processes or Dask), ``worker`` (one trial), ``loop`` (scheduling a running sweep),
``tracking`` (the parent run in MLflow), ``charts``, ``run`` (:func:`run_sweep`), ``job`` (the UI's
background sweep).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module. Loaded on first use: a sweep worker unpickling ``mlops_local.sweep.worker.run_trial``
# imports this package, and must not pay for the parent's side (promotion, registry, charts) too.
_API = {
    "DEFAULT_GRID_POINTS": "spec", "DEFAULT_TRIALS": "spec", "METRICS": "spec", "MODEL_MODES": "spec",
    "STRATEGIES": "spec", "SweepProgress": "spec", "SweepResult": "spec", "SweepSpec": "spec",
    "SweepSpecError": "spec", "TrialOutcome": "spec",
    "MAX_TRIALS": "plan", "parse_range_args": "space", "build_space": "space",
    "plan_sweep": "plan", "cores": "executor", "run_sweep": "run", "SweepJob": "job",
}
__all__ = [
    "DEFAULT_GRID_POINTS", "DEFAULT_TRIALS", "MAX_TRIALS", "METRICS", "MODEL_MODES", "STRATEGIES",
    "SweepJob", "SweepProgress", "SweepResult", "SweepSpec", "SweepSpecError", "TrialOutcome",
    "build_space", "cores", "parse_range_args", "plan_sweep", "run_sweep",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ loads them
    from mlops_local.sweep.executor import cores
    from mlops_local.sweep.job import SweepJob
    from mlops_local.sweep.plan import MAX_TRIALS, plan_sweep
    from mlops_local.sweep.run import run_sweep
    from mlops_local.sweep.space import build_space, parse_range_args
    from mlops_local.sweep.spec import (
        DEFAULT_GRID_POINTS,
        DEFAULT_TRIALS,
        METRICS,
        MODEL_MODES,
        STRATEGIES,
        SweepProgress,
        SweepResult,
        SweepSpec,
        SweepSpecError,
        TrialOutcome,
    )


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

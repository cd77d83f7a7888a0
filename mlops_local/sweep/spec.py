"""The sweep contract: what a sweep is asked to do and what each trial returns. The tags its runs
carry in MLflow are in :mod:`mlops_local.runmeta`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlops_local.errors import UserError
from mlops_local.ml.types import DEFAULT_EXPERIMENT, DatasetSpec
from mlops_local.runmeta import TERMINAL

STRATEGIES = ("grid", "random", "optuna")
MODEL_MODES = ("all", "best", "none")
# metric name -> (MLflow key without CV, MLflow key with CV or None, higher is better)
METRICS: dict[str, tuple[str, str | None, bool]] = {
    "r2": ("r2", "cv_r2_mean", True),
    "rmse": ("rmse", "cv_rmse_mean", False),
    "mae": ("mae", None, False),
}
DEFAULT_TRIALS = 20
DEFAULT_GRID_POINTS = 3


class SweepSpecError(UserError):
    """A sweep spec refused, with the facts in numbers, so each front end names its own controls.

    ``str()`` is the command line's wording (its flags). ``field`` is the :class:`SweepSpec` field at
    fault, ``reason`` a short code, ``param`` the hyperparameter concerned (if any), ``details`` the
    numbers: for ``grid_too_large`` ``total``, ``trials``, ``sizes`` (values per hyperparameter) and
    ``points_that_fit`` (the most grid points per range whose grid fits the trials, or None).
    """

    def __init__(self, message: str, *, field: str, reason: str, param: str | None = None,
                 **details: object) -> None:
        super().__init__(message)
        self.field, self.reason, self.param, self.details = field, reason, param, details


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: dataset, model, search space (catalog ranges, narrowed), strategy, budget, where to run."""

    dataset: DatasetSpec
    model: str
    strategy: str = "random"
    trials: int | None = None  # grid: None = the whole grid; random/optuna: None = DEFAULT_TRIALS
    metric: str = "r2"
    ranges: Mapping[str, str] = field(default_factory=dict)  # name -> "lo:hi[:log|:linear]" or "a|b|c"
    search: tuple[str, ...] | None = None  # hyperparameters searched (None: all that are not fixed)
    fixed: Mapping[str, object] = field(default_factory=dict)  # hyperparameters held at a value
    grid_points: int = DEFAULT_GRID_POINTS
    seed: int = 42  # sampler seed and every trial's split/estimator seed
    test_size: float = 0.2
    cv_folds: int = 0
    experiment: str = DEFAULT_EXPERIMENT
    jobs: int | None = None  # parallel trials; None = number of cores (local) or of Dask worker threads
    dask_scheduler: str | None = None
    models: str = "best"  # which trials log model, plots, dataset input: best (the best's) | all | none
    register: str | None = None
    alias: str | None = None
    # Also score the model with its default hyperparameters on the trials' data, split and seed (one
    # more fit, on a worker, not a run): the charts' baseline. The UI asks for it; off by default.
    baseline: bool = False


@dataclass
class TrialOutcome:
    """What one trial came to: its params, child run, status, metrics and score."""

    number: int
    params: dict[str, object]
    status: str  # FINISHED | FAILED | KILLED
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    error: str | None = None
    # models = best: the trial's MLflow model directory as a zip, while it may be the best: the path of
    # the file a local worker wrote (big payloads never cross the process pool's pipe, where a worker
    # killed mid-send would hang the pool), or the bytes from a Dask worker
    model_archive: bytes | str | None = field(default=None, repr=False, compare=False)
    model_error: str | None = field(default=None, repr=False, compare=False)  # why it has no archive

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {"number": self.number, "params": dict(self.params), "status": self.status,
                "run_id": self.run_id, "score": self.score, "metrics": dict(self.metrics),
                "durations": dict(self.durations), "error": self.error}


def better(a: TrialOutcome, b: TrialOutcome | None, higher_is_better: bool) -> bool:
    """Whether finished trial ``a`` beats ``b`` (ties: the earlier trial stays best)."""
    if a.status != "FINISHED" or a.score is None or not math.isfinite(a.score):
        return False
    if b is None or b.score is None:
        return True
    return a.score > b.score or (a.score == b.score and a.number < b.number) if higher_is_better \
        else a.score < b.score or (a.score == b.score and a.number < b.number)


@dataclass
class SweepProgress:
    """Where a running sweep stands; passed to the ``on_trial`` callback after every trial."""

    parent_run_id: str
    total: int
    outcomes: list[TrialOutcome]
    score_metric: str
    higher_is_better: bool
    best: TrialOutcome | None = None
    baseline: float | None = None  # the default hyperparameters' score (SweepSpec.baseline), once known

    @property
    def done(self) -> int:
        return len(self.outcomes)


@dataclass
class SweepResult:
    """A finished (or cancelled) sweep: parent run, every trial, the best one, its model."""

    parent_run_id: str
    experiment_id: str
    experiment: str
    status: str  # FINISHED | KILLED | FAILED
    dataset: str
    model: str
    strategy: str
    score_metric: str
    higher_is_better: bool
    total: int
    trials: list[TrialOutcome]
    best: TrialOutcome | None
    model_uri: str | None
    registered_version: str | None
    url: str
    duration_s: float
    executor: str
    warnings: list[str] = field(default_factory=list)  # e.g. the best model could not be registered
    baseline: float | None = None  # the default hyperparameters' score (SweepSpec.baseline)
    # what the promotion gate did with SweepSpec.alias: promoted | refused | unchanged (None: no alias)
    promotion: str | None = None

    @property
    def alias_set(self) -> bool:
        """Whether the alias asked for points at the registered version now."""
        return self.promotion in ("promoted", "forced", "unchanged")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view (the CLI's --json output)."""
        counts = {s.lower(): sum(1 for t in self.trials if t.status == s) for s in TERMINAL}
        return {
            "parent_run_id": self.parent_run_id, "experiment_id": self.experiment_id,
            "experiment": self.experiment, "status": self.status, "dataset": self.dataset,
            "model": self.model, "strategy": self.strategy, "score_metric": self.score_metric,
            "goal": "maximize" if self.higher_is_better else "minimize", "planned": self.total,
            "counts": counts, "best": self.best.to_dict() if self.best else None,
            "model_uri": self.model_uri, "registered_version": self.registered_version,
            "promotion": self.promotion, "url": self.url,
            "duration_s": round(self.duration_s, 3), "executor": self.executor,
            "warnings": list(self.warnings), "baseline": self.baseline,
            "trials": [t.to_dict() for t in self.trials],
        }


def score_key(metric: str, cv_folds: int) -> tuple[str, bool]:
    """The MLflow metric key a sweep optimises and whether higher is better (ValueError when unknown)."""
    plain, cv, higher = METRICS[metric]
    if cv_folds:
        if cv is None:
            raise ValueError(metric)
        return cv, higher
    return plain, higher

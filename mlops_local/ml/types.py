"""What a training is asked (TrainRequest) and returns (TrainResult): shared by the engine, the UI,
the CLI, the exporter and sweeps. The tags and metrics a run carries in MLflow are in
:mod:`mlops_local.runmeta`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_EXPERIMENT = "mlops-local"
# The promotion gate's verdict runs (ml/promotion.py) carry their result in this tag; the UI counts them.
TAG_PROMOTION_RESULT = "mlops.promotion.result"
PROMOTION_RESULTS = ("promoted", "forced", "refused")

# Steps a training reports through its progress callback, in order.
STEPS = ("load", "split", "fit", "evaluate", "log", "publish")

# progress(step, elapsed_seconds_since_training_start)
ProgressCallback = Callable[[str, float], None]


@dataclass(frozen=True)
class DatasetSpec:
    """What to load: a built-in name or a file path, its target and an optional feature subset."""

    name: str
    target: str | None = None
    features: tuple[str, ...] | None = None
    options: Mapping[str, object] = field(default_factory=dict)  # e.g. friedman1 n_samples, noise, seed


@dataclass(frozen=True)
class TrainRequest:
    """One training: dataset, model and its hyperparameters, split, tracking destination."""

    dataset: DatasetSpec
    model: str
    params: Mapping[str, object] = field(default_factory=dict)
    test_size: float = 0.2
    seed: int = 42
    cv_folds: int = 0
    experiment: str = DEFAULT_EXPERIMENT
    source: str = "cli"
    parent_run_id: str | None = None
    log_model: bool = True
    log_plots: bool = True  # the predicted-vs-actual, residual and importance SVGs under plots/
    log_dataset: bool = True  # the dataset as the run's MLflow input (its params name it either way)
    extra_tags: Mapping[str, str] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a finished, tracked training returns (also what the exporter publishes at once)."""

    run_id: str
    experiment_id: str
    experiment: str
    dataset: str
    model: str
    params: dict[str, object]
    metrics: dict[str, float]  # r2, rmse, mae (+ cv_* with CV)
    durations: dict[str, float]  # fit_s, predict_s, total_s
    model_uri: str | None
    tracking_uri: str
    finished_at: float  # epoch seconds (the run's end time)
    y_test: object = None  # numpy arrays, for the UI's charts
    y_pred: object = None
    feature_importance: object = None  # pandas Series indexed by feature name, or None
    status: str = "FINISHED"
    source: str = ""  # the request's (ui | cli | sweep)
    client: str = ""  # MLOPS_CLIENT_NAME of the machine that trained it

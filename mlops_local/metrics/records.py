"""One finished training as the exporter sees it, from a TrainResult (UI) or an MLflow run (sync)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlops_local.metrics.labels import UNKNOWN, clean_label
from mlops_local.ml.types import TrainResult
from mlops_local.restclient import Run
from mlops_local.runmeta import TAG_BEST_RUN, TAG_CLIENT, TAG_DATASET, TAG_MODEL, TAG_ROLE, TAG_SOURCE

# Run statuses the exporter counts (others, RUNNING/SCHEDULED/KILLED, are ignored).
COUNTED_STATUSES = ("FINISHED", "FAILED")
# What a record is: a training (counted; its values are the latest of its key), a sweep's trial
# (counted, but its values do not move the latest: they follow trainings only), or a finished sweep
# (not counted: its trials were; its best r2 feeds mlops_best_r2 only).
ROLES = ("training", "trial", "sweep")
# A finished training has at least one of these test-set scores; a failed one may have none.
SCORES = ("r2", "rmse", "mae")


def _finite(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class RunRecord:
    """A finished run with sanitised labels; metric fields are None when absent or not finite."""

    run_id: str
    experiment: str
    dataset: str
    model: str
    status: str  # "finished" | "failed"
    end_ms: int
    r2: float | None = None
    rmse: float | None = None
    mae: float | None = None
    fit_s: float | None = None
    role: str = "training"
    client: str = UNKNOWN  # the machine that trained it (tag mlops.client; runs from before it: unknown)
    source: str = UNKNOWN  # ui | cli | sweep

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def key(self) -> tuple[str, str, str]:
        """The {experiment, dataset, model} combination the gauges are per."""
        return (self.experiment, self.dataset, self.model)

    @property
    def order(self) -> tuple[int, str]:
        """Which of two runs is the later one (end time, run id as the tie-break), whatever arrives first."""
        return (self.end_ms, self.run_id)


def _record(run_id: str, experiment: str, dataset: str, model: str, status: str, end_ms: int,
            metrics: Mapping[str, object], role: str = "training", client: str | None = None,
            source: str | None = None) -> RunRecord:
    return RunRecord(
        run_id=clean_label(run_id), experiment=clean_label(experiment), dataset=clean_label(dataset),
        model=clean_label(model), status=status.lower(), end_ms=int(end_ms),
        r2=_finite(metrics.get("r2")), rmse=_finite(metrics.get("rmse")), mae=_finite(metrics.get("mae")),
        fit_s=_finite(metrics.get("fit_s")), role=role, client=clean_label(client),
        source=clean_label(source),
    )


def record_from_result(result: TrainResult) -> RunRecord:
    """The record of a training this process just finished (published before any sync sees it)."""
    metrics = dict(result.metrics)
    metrics.setdefault("fit_s", result.durations.get("fit_s"))
    return _record(result.run_id, result.experiment, result.dataset, result.model,
                   result.status or "FINISHED", round(result.finished_at * 1000), metrics,
                   client=result.client, source=result.source)


def record_from_run(run: Run, experiment_names: Mapping[str, str]) -> RunRecord | None:
    """The record of an MLflow run (MLflow's entity or the REST client's), or None when it is not a
    finished/failed mlops-local training."""
    info, data = run.info, run.data
    if info.status not in COUNTED_STATUSES or info.end_time is None:
        return None
    dataset, model = data.tags.get(TAG_DATASET), data.tags.get(TAG_MODEL)
    if not dataset or not model:
        return None  # not a training that follows the conventions (e.g. a notebook's scratch run)
    experiment = experiment_names.get(info.experiment_id, info.experiment_id)
    role = data.tags.get(TAG_ROLE)
    if role == "parent":  # a sweep's summary: its best trial's values (the trials are the trainings)
        best_run = data.tags.get(TAG_BEST_RUN)
        best = {k: data.metrics.get(f"best_{k}") for k in ("r2", "rmse", "mae")}
        if info.status != "FINISHED" or not best_run or all(v is None for v in best.values()):
            return None
        return _record(best_run, experiment, dataset, model, info.status, info.end_time, best, "sweep")
    if info.status == "FINISHED" and not any(_finite(data.metrics.get(k)) is not None for k in SCORES):
        return None  # tagged but never evaluated (a run cut short or a scratch run): not a training
    return _record(info.run_id, experiment, dataset, model, info.status, info.end_time, data.metrics,
                   "trial" if role == "trial" else "training", client=data.tags.get(TAG_CLIENT),
                   source=data.tags.get(TAG_SOURCE))

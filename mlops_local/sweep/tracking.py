"""The sweep's parent run in MLflow: spec, live progress, FAILED/KILLED children, best trial, charts."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.owner import owner_tags
from mlops_local.runmeta import (
    TAG_BEST,
    TAG_BEST_RUN,
    TAG_DATASET,
    TAG_ERROR,
    TAG_GOAL,
    TAG_MODEL,
    TAG_NOTE,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SCORE_METRIC,
    TAG_SOURCE,
    TAG_STATE,
    TAG_TRIAL,
)
from mlops_local.settings import Settings
from mlops_local.sweep.charts import write_charts
from mlops_local.sweep.space import SearchSpace
from mlops_local.sweep.spec import SweepSpec, TrialOutcome

log = logging.getLogger(__name__)

_MAX_PARAM = 500
_MAX_TAG = 5000
CANCELLED = "cancelled: the sweep was stopped"  # the error tag of a trial the sweep's stop closed


def _now_ms() -> int:
    return int(time.time() * 1000)


def create_parent(client: MlflowClient, experiment_id: str, spec: SweepSpec, space: SearchSpace, *,
                  dataset: str, total: int, score_metric: str, higher_is_better: bool, executor: str,
                  dataset_input: object = None) -> str:
    """Create the RUNNING parent run with the sweep's spec as params (and ``dataset_input``, an MLflow
    DatasetInput, as its input); returns its id."""
    goal = "maximize" if higher_is_better else "minimize"
    tags = {TAG_SOURCE: "sweep", TAG_ROLE: "parent", TAG_DATASET: dataset, TAG_MODEL: spec.model,
            TAG_SCORE_METRIC: score_metric, TAG_GOAL: goal, TAG_STATE: "running",
            "sweep_strategy": spec.strategy, "mlflow.source.name": "mlops-local",
            "mlflow.source.type": "LOCAL"}
    tags.update(owner_tags())  # the reaper closes the parent if this process dies holding it
    run = client.create_run(experiment_id, tags=tags,
                            run_name=f"sweep-{spec.strategy}-{spec.model}-{dataset}")
    params: dict[str, object] = {
        "strategy": spec.strategy, "trials": total, "metric": spec.metric, "score_metric": score_metric,
        "goal": goal, "seed": spec.seed, "test_size": spec.test_size, "cv_folds": spec.cv_folds,
        "model": spec.model, "dataset": dataset, "executor": executor,
    }
    if spec.strategy == "grid":
        params["grid_points"] = spec.grid_points
    params.update({f"space.{k}": v for k, v in space.describe().items()})
    params.update({f"fixed.{k}": v for k, v in space.fixed.items()})
    params.update({f"dataset_{k}": v for k, v in spec.dataset.options.items()})
    try:
        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()])
        if dataset_input is not None:
            client.log_inputs(run.info.run_id, datasets=[dataset_input])
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


def progress_metrics(done: int, outcome: TrialOutcome, best: TrialOutcome | None) -> list[Metric]:
    """Live progress for the parent: trials done, this trial's score (step = trial number), best so far."""
    now = _now_ms()
    metrics = [Metric("trials_done", float(done), now, done)]
    if outcome.score is not None:
        metrics.append(Metric("trial_score", float(outcome.score), now, outcome.number))
    if best is not None and best.score is not None:
        metrics.append(Metric("best_score", float(best.score), now, done))
    return metrics


def log_progress(client: MlflowClient, parent_run_id: str, metrics: Sequence[Metric]) -> None:
    """Log progress metrics on the parent (best effort: the sweep goes on without them)."""
    if not metrics:
        return
    try:
        client.log_batch(parent_run_id, metrics=list(metrics))
    except MlflowException:
        log.warning("could not log progress on sweep %s", parent_run_id, exc_info=True)


def record_failed_child(client: MlflowClient, experiment_id: str, parent_run_id: str,
                        trial_tags: Mapping[str, str], outcome: TrialOutcome) -> str:
    """A FAILED child for a trial that failed before train() created one (the error as a tag)."""
    tags = {**trial_tags, TAG_PARENT: parent_run_id, TAG_ERROR: (outcome.error or "failed")[:_MAX_TAG]}
    run = client.create_run(experiment_id, tags=tags, run_name=f"trial-{outcome.number}")
    try:
        client.log_batch(run.info.run_id, params=[Param(k, str(v)[:_MAX_PARAM])
                                                  for k, v in outcome.params.items()])
    finally:
        client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def close_child(client: MlflowClient, run_id: str, status: str, error: str) -> None:
    """Close a trial's child run ``status`` (FAILED, KILLED) with ``error`` as its tag."""
    client.set_tag(run_id, TAG_ERROR, error[:_MAX_TAG])
    client.set_terminated(run_id, status)


def kill_running_children(client: MlflowClient, experiment_id: str, parent_run_id: str,
                          scored: str | None = None) -> list[tuple[int, str]]:
    """Mark every RUNNING child KILLED; returns (trial number, run id) of each.

    ``scored``: the score metric of a stopped sweep; a child that logged it was stopped after its
    fit and evaluation (while keeping its model or closing its run): it is a result, closed FINISHED.
    """
    killed = []
    for run in client.search_runs([experiment_id], filter_string=(
            f"tags.`{TAG_PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'"), max_results=1000):
        run_id = run.info.run_id
        try:
            if scored is not None and scored in run.data.metrics:
                client.set_tag(run_id, TAG_NOTE, "The sweep was stopped after this trial logged its metrics; "
                                                 "artifacts it had not uploaded yet are missing.")
                client.set_terminated(run_id, "FINISHED")
                continue
            close_child(client, run_id, "KILLED", CANCELLED)
        except MlflowException:
            log.error("could not mark trial run %s KILLED", run_id, exc_info=True)
            continue
        number = run.data.tags.get(TAG_TRIAL, "-1")
        killed.append((int(number) if number.lstrip("-").isdigit() else -1, run_id))
    return killed


def render_artifacts(out_dir: Path, outcomes: Sequence[TrialOutcome], score_metric: str,
                     higher_is_better: bool, baseline: float | None = None) -> Path:
    """Charts (plots/) and the trials table (sweep/trials.csv) for the parent run, written to ``out_dir``."""
    write_charts(out_dir / "plots", outcomes, score_metric, higher_is_better, baseline)
    write_trials_table(out_dir / "sweep" / "trials.csv", outcomes)
    return out_dir


def finish_parent(client: MlflowClient, settings: Settings, parent_run_id: str,
                  outcomes: Sequence[TrialOutcome], best: TrialOutcome | None, *, status: str, state: str,
                  duration_s: float, artifacts_dir: Path | None = None,
                  extra_params: Mapping[str, object] | None = None, error: str | None = None) -> None:
    """Best trial's params/metrics, counts and ``artifacts_dir`` on the parent; then close it."""
    try:
        now = _now_ms()
        metrics = {f"trials_{s.lower()}": float(sum(1 for o in outcomes if o.status == s))
                   for s in ("FINISHED", "FAILED", "KILLED")}
        metrics["duration_s"] = duration_s
        params: dict[str, object] = dict(extra_params or {})
        tags = {TAG_STATE: state}
        if error:
            tags[TAG_ERROR] = error[:_MAX_TAG]
        if best is not None and best.run_id:
            metrics.update({f"best_{k}": float(v) for k, v in best.metrics.items()})
            if best.score is not None:
                metrics["best_score"] = float(best.score)
            params.update({f"best.{k}": v for k, v in best.params.items()})
            params["best.trial"] = best.number
            tags[TAG_BEST_RUN] = best.run_id
            client.set_tag(best.run_id, TAG_BEST, "true")
        client.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        if artifacts_dir is not None:
            run = client.get_run(parent_run_id)
            tracking.log_artifacts(client, settings, run.info.artifact_uri, artifacts_dir)
    except BaseException:
        log.error("could not record the sweep summary on run %s", parent_run_id, exc_info=True)
        client.set_terminated(parent_run_id, "FAILED" if status == "FINISHED" else status)
        raise
    client.set_terminated(parent_run_id, status)


def write_trials_table(path: Path, outcomes: Sequence[TrialOutcome]) -> Path:
    """One row per trial: number, status, score, run id, each param, error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted({k for o in outcomes for k in o.params})
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "status", "score", "run_id", *names, "error"])
        for o in sorted(outcomes, key=lambda o: o.number):
            writer.writerow([o.number, o.status, "" if o.score is None else o.score, o.run_id or "",
                             *(json.dumps(o.params.get(n)) if not isinstance(o.params.get(n), str)
                               else o.params.get(n) for n in names), o.error or ""])
    return path

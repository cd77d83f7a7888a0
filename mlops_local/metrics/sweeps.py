"""Sweep metrics: ``mlops_sweep_trials_total{status}`` and ``mlops_sweep_best_score{...}``.

One collector, fed two ways and deduplicated by run id, like the model exporter:
- a sweep running in this process (the UI) calls :meth:`SweepMetrics.observe_trial` as each trial ends;
- the exporter's sync hands every page of runs it reads from MLflow to :meth:`SweepMetrics.observe_runs`,
  which picks the sweep trials out (tags ``source = sweep``, ``sweep_role = trial``), so sweeps started
  from the CLI or another machine show up within a sync interval.

``mlops_sweep_best_score`` is the best score so far of the latest sweep per {experiment, dataset, model,
metric} (``metric`` is the MLflow key optimised: r2, rmse, mae, cv_r2_mean, cv_rmse_mean), so a running
sweep's progress is visible even when an older sweep scored better.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mlops_local.metrics.bounded import BoundedMap
from mlops_local.metrics.labels import clean_label
from mlops_local.runmeta import (
    TAG_DATASET,
    TAG_GOAL,
    TAG_MODEL,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SCORE_METRIC,
    TAG_SOURCE,
    TERMINAL,
)

STATUSES = tuple(s.lower() for s in TERMINAL)  # finished, failed, killed
BEST_LABELS = ("experiment", "dataset", "model", "metric")
MAX_SEEN = 100_000


@dataclass
class _Best:
    sweep_id: str
    latest_ms: int
    score: float
    higher_is_better: bool


class SweepMetrics(Collector):
    """Collector of sweep progress; registered on ``registry`` when one is given."""

    def __init__(self, registry: CollectorRegistry | None = None, *, max_series: int = 500) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STATUSES, 0)
        self._best: BoundedMap[tuple[str, str, str, str], _Best] = BoundedMap(max_series)
        self._seen: dict[str, None] = {}  # insertion-ordered run ids already counted
        if registry is not None:
            registry.register(self)

    # -- feeding ---------------------------------------------------------------------------------
    def observe_trial(self, run_id: str, status: str, *, experiment: str, dataset: str, model: str,
                      score_metric: str, higher_is_better: bool, sweep_id: str, score: float | None,
                      end_ms: int | None = None) -> bool:
        """Count one ended trial (once per run id) and update its sweep's best score; True when new."""
        status = status.lower()
        if status not in STATUSES:
            return False
        end_ms = int(time.time() * 1000) if end_ms is None else int(end_ms)
        key = (clean_label(experiment), clean_label(dataset), clean_label(model), clean_label(score_metric))
        with self._lock:
            new = run_id not in self._seen
            if new:
                self._seen[run_id] = None
                if len(self._seen) > MAX_SEEN:
                    del self._seen[next(iter(self._seen))]
                self._counts[status] += 1
            if status == "finished" and score is not None and math.isfinite(score):
                self._update_best(key, sweep_id, end_ms, float(score), higher_is_better)
        return new

    def _update_best(self, key: tuple[str, str, str, str], sweep_id: str, end_ms: int, score: float,
                     higher_is_better: bool) -> None:
        current = self._best.get(key)
        if current is None or (current.sweep_id != sweep_id and end_ms > current.latest_ms):
            self._best.put(key, _Best(sweep_id, end_ms, score, higher_is_better), end_ms)
        elif current.sweep_id == sweep_id:
            better = score > current.score if higher_is_better else score < current.score
            latest = max(current.latest_ms, end_ms)
            self._best.put(key, _Best(sweep_id, latest, score if better else current.score, higher_is_better),
                           latest)

    def observe_runs(self, runs: Iterable[object], experiment_names: Mapping[str, str]) -> int:
        """Pick the ended sweep trials out of MLflow runs (any order, repeats welcome); returns new ones."""
        new = 0
        for run in runs:
            info, tags = run.info, run.data.tags
            if tags.get(TAG_SOURCE) != "sweep" or tags.get(TAG_ROLE) != "trial" or info.end_time is None:
                continue
            if info.status not in TERMINAL:
                continue
            metric = tags.get(TAG_SCORE_METRIC, "r2")
            experiment = experiment_names.get(info.experiment_id, info.experiment_id)
            new += self.observe_trial(
                info.run_id, info.status, experiment=experiment, dataset=tags.get(TAG_DATASET, ""),
                model=tags.get(TAG_MODEL, ""), score_metric=metric,
                higher_is_better=tags.get(TAG_GOAL, "maximize") != "minimize",
                sweep_id=tags.get(TAG_PARENT, ""), score=run.data.metrics.get(metric),
                end_ms=info.end_time)
        return new

    # -- inspection --------------------------------------------------------------------------------
    def trial_counts(self) -> dict[str, int]:
        """Trials counted per status."""
        with self._lock:
            return dict(self._counts)

    def best_score(self, experiment: str, dataset: str, model: str, metric: str) -> float | None:
        """The exported best score of the latest sweep for these labels (None when none)."""
        key = (clean_label(experiment), clean_label(dataset), clean_label(model), clean_label(metric))
        with self._lock:
            best = self._best.get(key)
            return None if best is None else best.score

    # -- collector ----------------------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        """Family names, so registering never runs a collect."""
        return [CounterMetricFamily("mlops_sweep_trials", "", labels=["status"]),
                GaugeMetricFamily("mlops_sweep_best_score", "", labels=list(BEST_LABELS))]

    def collect(self) -> Iterable[Metric]:
        """Counts per status (all three always present) and the best score per sweep key."""
        with self._lock:
            counts = dict(self._counts)
            best = list(self._best.items())
        trials = CounterMetricFamily("mlops_sweep_trials", "Sweep trials that ended, by final status "
                                     "(finished, failed, killed).", labels=["status"])
        for status in STATUSES:
            trials.add_metric([status], counts[status])
        yield trials
        gauge = GaugeMetricFamily("mlops_sweep_best_score", "Best score so far of the latest sweep per "
                                  "experiment, dataset, model and optimised metric.",
                                  labels=list(BEST_LABELS))
        for key, entry in best:
            if entry is not None:
                gauge.add_metric(list(key), entry.score)
        yield gauge

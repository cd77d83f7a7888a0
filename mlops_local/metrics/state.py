"""What the exporter knows: latest values per bounded key, run counts, durations; and its metric families.

Not thread-safe on its own: the exporter holds one lock around every call.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric

from mlops_local.metrics.bounded import BoundedMap
from mlops_local.metrics.records import RunRecord

# Fit times of the catalog's models on the bundled datasets run from milliseconds to a minute; few
# buckets, since every model exports them all.
DURATION_BUCKETS = (0.01, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
MODEL_LABELS = ("experiment", "dataset", "model")
DEFAULT_MAX_SEEN = 500_000  # run ids remembered for de-duplication (pruned by the sync's horizon)


@dataclass
class Histogram:
    """Per-bucket (non-cumulative) counts and the sum of one model's fit times."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class ExporterState:
    """Bounded latest values and counts, fed by records from the UI or the sync, deduplicated by run id."""

    def __init__(self, max_series: int, max_seen: int = DEFAULT_MAX_SEEN) -> None:
        self.latest: BoundedMap[tuple[str, str, str], RunRecord] = BoundedMap(max_series)
        self.best: BoundedMap[tuple[str, str], float] = BoundedMap(max_series)
        self.last_ts: BoundedMap[tuple[str, str], int] = BoundedMap(max_series)
        self.runs: BoundedMap[tuple[str, str, str], int] = BoundedMap(max_series)
        self.durations: BoundedMap[str, Histogram] = BoundedMap(max_series)
        self.clients: BoundedMap[tuple[str, str], int] = BoundedMap(max_series)  # (client, source) -> runs
        self.last_run: RunRecord | None = None
        self.seen: dict[str, int] = {}  # run id -> end time (ms) of every run counted, until pruned
        self.max_seen = max_seen
        self.horizon_ms = 0  # runs that ended before this were counted already (their ids are pruned)
        self.evicted = 0
        self.version = 0  # bumped on every change, so the exporter rebuilds its snapshot lazily

    def apply(self, record: RunRecord) -> bool:
        """Publish ``record``'s values; count it unless its run was counted before. True when counted."""
        self._update_gauges(record)
        if record.role == "sweep":  # a summary: its trials are counted
            self.version += 1
            return False
        new = record.run_id not in self.seen and record.end_ms >= self.horizon_ms
        if new:
            self.seen[record.run_id] = record.end_ms
            if len(self.seen) > self.max_seen:
                del self.seen[next(iter(self.seen))]
            self._count(record)
        self.version += 1
        return new

    def prune(self, horizon_ms: int) -> None:
        """Forget run ids that ended before ``horizon_ms``: no sync will read them again."""
        if horizon_ms <= self.horizon_ms:
            return
        self.horizon_ms = horizon_ms
        self.seen = {run_id: end for run_id, end in self.seen.items() if end >= horizon_ms}

    def _put(self, mapping: BoundedMap, key: object, value: object, activity: int) -> None:
        self.evicted += len(mapping.put(key, value, activity))

    def _update_gauges(self, record: RunRecord) -> None:
        if not record.finished:
            return
        end = record.end_ms
        # The latest gauges are trainings' (UI, CLI, notebooks): a sweep's trials and its best leave them
        # alone (mlops_sweep_best_score is the sweep's series), so a sweep never reads as a regression.
        latest = record.role == "training"
        if latest and (record.r2 is not None or record.rmse is not None or record.mae is not None):
            current = self.latest.get(record.key)
            if current is None or record.order > current.order:
                self._put(self.latest, record.key, record, end)
            if self.last_run is None or record.order > self.last_run.order:
                self.last_run = record
        if record.r2 is not None:
            pair = (record.experiment, record.dataset)
            best = self.best.get(pair)
            self._put(self.best, pair, record.r2 if best is None else max(best, record.r2), end)
        if record.role == "sweep":
            return  # its end is the sweep's, not a training's
        pair = (record.dataset, record.model)
        self._put(self.last_ts, pair, max(end, self.last_ts.get(pair) or 0), end)

    def _count(self, record: RunRecord) -> None:
        key = (record.dataset, record.model, record.status)
        self._put(self.runs, key, (self.runs.get(key) or 0) + 1, record.end_ms)
        pair = (record.client, record.source)
        self._put(self.clients, pair, (self.clients.get(pair) or 0) + 1, record.end_ms)
        if record.finished and record.fit_s is not None and record.fit_s >= 0:
            histogram = self.durations.get(record.model) or Histogram()
            histogram.observe(record.fit_s)
            self._put(self.durations, record.model, histogram, record.end_ms)

    def families(self, with_counts: bool) -> list[Metric]:
        """The metric families of the current state (counts left out while they are still incomplete)."""
        latest = sorted(self.latest.items())
        r2 = GaugeMetricFamily("mlops_model_r2", "Test-set R2 of the latest finished training per "
                               "experiment, dataset and model.", labels=MODEL_LABELS)
        rmse = GaugeMetricFamily("mlops_model_rmse", "Test-set RMSE (square root of the MSE, target "
                                 "units) of the latest finished training.", labels=MODEL_LABELS)
        mae = GaugeMetricFamily("mlops_model_mae", "Test-set mean absolute error of the latest finished "
                                "training.", labels=MODEL_LABELS)
        for key, record in latest:
            for family, value in ((r2, record.r2), (rmse, record.rmse), (mae, record.mae)):
                if value is not None:
                    family.add_metric(key, value)
        best = GaugeMetricFamily("mlops_best_r2", "Best test-set R2 of any finished training per "
                                 "experiment and dataset.", labels=("experiment", "dataset"))
        for key, value in sorted(self.best.items()):
            best.add_metric(key, value)
        last_ts = GaugeMetricFamily("mlops_last_training_timestamp_seconds", "End time (Unix seconds) of "
                                    "the latest finished training per dataset and model.",
                                    labels=("dataset", "model"))
        for key, value in sorted(self.last_ts.items()):
            last_ts.add_metric(key, value / 1000.0)
        info = InfoMetricFamily("mlops_last_run", "The latest finished training: its MLflow run id.",
                                labels=())
        if self.last_run is not None:
            run = self.last_run
            info.add_metric((), {"run_id": run.run_id, "experiment": run.experiment,
                                 "dataset": run.dataset, "model": run.model})
        series = GaugeMetricFamily("mlops_model_series", "Experiment, dataset and model combinations "
                                   "exported now (capped by MLOPS_MAX_SERIES).", value=len(self.latest))
        evicted = CounterMetricFamily("mlops_series_evicted", "Label combinations dropped, oldest first, "
                                      "to stay under MLOPS_MAX_SERIES.", value=self.evicted)
        families: list[Metric] = [r2, rmse, mae, best, last_ts, info, series, evicted]
        if with_counts:
            runs = CounterMetricFamily("mlops_training_runs", "Finished and failed trainings in MLflow "
                                       "per dataset, model and final status.",
                                       labels=("dataset", "model", "status"))
            for key, value in sorted(self.runs.items()):
                runs.add_metric(key, value)
            durations = HistogramMetricFamily("mlops_training_duration_seconds", "Fit time of finished "
                                              "trainings per model.", labels=("model",))
            for model, histogram in sorted(self.durations.items(), key=lambda item: item[0]):
                durations.add_metric((model,), histogram.cumulative(), histogram.total)
            clients = CounterMetricFamily("mlops_client_runs", "Finished and failed trainings in MLflow "
                                          "per client machine (MLOPS_CLIENT_NAME) and source.",
                                          labels=("client", "source"))
            for key, value in sorted(self.clients.items()):
                clients.add_metric(key, value)
            families += [runs, durations, clients]
        return families


def family_names() -> list[Metric]:
    """Empty families naming every metric the state exports (for the registry's describe())."""
    empty = ExporterState(1)
    return empty.families(with_counts=True)

"""The model-quality exporter: a custom collector on the runtime's private registry.

Values come from two places: ``observe()`` when this process finishes a training (at once), and a
background sync from the MLflow tracking server (runs from the CLI, notebooks, other machines). Both
go through one lock into an `ExporterState`, deduplicated by run id, so a run is counted once however
it arrives. A scrape serves a snapshot rebuilt only when the state changed, so /metrics costs the same
at 10 or 10,000 runs: only the latest value per bounded {experiment, dataset, model} is kept.

Counters (`mlops_training_runs_total`, the duration histogram) count every finished/failed run in
MLflow. While the first full read after a start is under way they are left out of /metrics rather
than shown low: Prometheus then sees a gap across a restart instead of a reset followed by a jump.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mlops_local.metrics.champions import Champion, ChampionReader, champion_family
from mlops_local.metrics.records import RunRecord, record_from_result
from mlops_local.metrics.state import ExporterState, family_names
from mlops_local.metrics.sync import MlflowSync, SyncWorker, make_client
from mlops_local.ml.types import TrainResult
from mlops_local.restclient import Run, TrackingClient
from mlops_local.settings import Settings

if TYPE_CHECKING:
    from mlops_local.reaper import Reaper

log = logging.getLogger(__name__)

# Called with every page of runs the sync reads (any order, repeats possible) and experiment id -> name.
RunListener = Callable[[Sequence[Run], Mapping[str, str]], object]

# Longest a scrape waits, right after a start, for the first page of the full read (the gauges): a
# share of the scrape interval, which is also Prometheus' scrape timeout for intervals under 10 s.
MAX_READY_WAIT = 2.0
READY_WAIT_SHARE = 0.75


@dataclass
class SyncStats:
    """Health of the sync, exported live."""

    errors: int = 0
    runs_read: int = 0
    last_success: float | None = None
    last_duration: float | None = None
    bootstrapped: bool = False


class ModelMetricsExporter(Collector):
    """Collector of model-quality metrics; ``observe()`` publishes a training, ``start()`` syncs MLflow."""

    def __init__(self, registry: CollectorRegistry | None, settings: Settings, *,
                 client: TrackingClient | None = None, experiments: Sequence[str] | None = None,
                 max_series: int | None = None, overlap_s: float | None = None,
                 max_backoff: float | None = None, reaper: Reaper | None = None) -> None:
        self.settings = settings
        self._reaper = reaper  # closes runs orphaned by dead processes, at each sync
        self._client = client
        self._experiments = tuple(experiments) if experiments is not None else None
        self._overlap_s = overlap_s
        self._max_backoff = max_backoff
        self._lock = threading.Lock()
        self._state = ExporterState(max_series or settings.max_series)
        self._stats = SyncStats()
        self._snapshot: tuple[Metric, ...] = ()
        self._snapshot_version = -1
        self._syncing = False  # a sync was started: counts stay hidden until its full read is done
        self._first_read = threading.Event()
        self._ready_wait = min(MAX_READY_WAIT, settings.scrape_interval * READY_WAIT_SHARE)
        self._sync: MlflowSync | None = None  # created on the first start(), kept: it holds the watermark
        self._worker: SyncWorker | None = None
        self._listeners: list[RunListener] = []
        self._champions: tuple[Champion, ...] = ()
        if registry is not None:
            registry.register(self)

    # -- publishing ---------------------------------------------------------------------------
    def observe(self, result: TrainResult) -> None:
        """Publish a training this process just finished (the UI's "publish" step)."""
        record = record_from_result(result)
        with self._lock:
            counted = self._state.apply(record)
        log.debug("published run %s (%s)", record.run_id, "counted" if counted else "already counted")

    def apply_records(self, records: Iterable[RunRecord]) -> int:
        """Publish runs read from MLflow; returns how many were new (not counted before)."""
        with self._lock:
            return sum(self._state.apply(record) for record in records)

    def add_run_listener(self, listener: RunListener) -> None:
        """Also hand every page of runs the sync reads to ``listener`` (e.g. the sweep metrics)."""
        with self._lock:
            self._listeners.append(listener)

    def notify_listeners(self, runs: Sequence[Run], experiment_names: Mapping[str, str]) -> None:
        """Pass a page of raw runs on; a failing listener is logged, never fails the sync."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(runs, experiment_names)
            except Exception:  # one consumer must not stop the model metrics
                log.exception("run listener %r failed on a page of %d runs", listener, len(runs))

    def first_page_read(self) -> None:
        """The sync's first page is in: scrapes stop waiting for it."""
        self._first_read.set()

    def complete_bootstrap(self, horizon_ms: int) -> None:
        """The full read is done: counts are complete (and exported); forget ids before ``horizon_ms``."""
        with self._lock:
            self._state.prune(horizon_ms)
            self._stats.bootstrapped = True
            self._state.version += 1
        self._first_read.set()

    def prune(self, horizon_ms: int) -> None:
        """Forget run ids that ended before ``horizon_ms`` (the sync will not read them again)."""
        with self._lock:
            self._state.prune(horizon_ms)

    def set_champions(self, champions: Iterable[Champion]) -> None:
        """The registry's champions as the sync last read them (mlops_champion_r2)."""
        with self._lock:
            self._champions = tuple(champions)

    def record_sync(self, seconds: float) -> None:
        """One successful sync."""
        with self._lock:
            self._stats.last_success = time.time()
            self._stats.last_duration = seconds

    def record_runs_read(self, runs_read: int) -> None:
        """Runs fetched by a sync still under way (so a long full read shows progress)."""
        with self._lock:
            self._stats.runs_read += runs_read

    def record_sync_error(self) -> None:
        """One failed sync (MLflow down, slow, or answering errors)."""
        with self._lock:
            self._stats.errors += 1
        self._first_read.set()

    # -- inspection (tests, benchmarks, the UI) ----------------------------------------------------
    @property
    def stats(self) -> SyncStats:
        """A copy of the sync statistics."""
        with self._lock:
            return SyncStats(**vars(self._stats))

    def series_count(self) -> int:
        """How many {experiment, dataset, model} combinations are exported."""
        with self._lock:
            return len(self._state.latest)

    def latest(self, experiment: str, dataset: str, model: str) -> RunRecord | None:
        """The latest finished run published for this combination (labels as exported)."""
        with self._lock:
            return self._state.latest.get((experiment, dataset, model))

    # -- collector ------------------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        """Names of the families collect() yields (so registering never runs a collect)."""
        return [*family_names(), champion_family(()), *self._stats_families(SyncStats())]

    def collect(self) -> Iterable[Metric]:
        """The snapshot of model metrics plus the sync's health; called by the /metrics thread."""
        if self._syncing and not self._first_read.is_set():
            self._first_read.wait(self._ready_wait)
        with self._lock:
            if self._snapshot_version != self._state.version:
                counts_ready = self._stats.bootstrapped or not self._syncing
                self._snapshot = tuple(self._state.families(with_counts=counts_ready))
                self._snapshot_version = self._state.version
            snapshot, stats, champions = self._snapshot, SyncStats(**vars(self._stats)), self._champions
        yield from snapshot
        yield champion_family(champions)
        yield from self._stats_families(stats)

    @staticmethod
    def _stats_families(stats: SyncStats) -> list[Metric]:
        families: list[Metric] = [
            CounterMetricFamily("mlops_sync_errors", "Failed syncs from the MLflow tracking server.",
                                value=stats.errors),
            CounterMetricFamily("mlops_sync_runs_read", "Runs read from the MLflow tracking server by "
                                "the sync (first full read, then increments).", value=stats.runs_read),
        ]
        if stats.last_success is not None:
            families.append(GaugeMetricFamily("mlops_sync_last_success_timestamp_seconds",
                                              "When the last successful sync from MLflow ended (Unix s).",
                                              value=stats.last_success))
        if stats.last_duration is not None:
            families.append(GaugeMetricFamily("mlops_sync_last_duration_seconds",
                                              "How long the last successful sync took.",
                                              value=stats.last_duration))
        return families

    # -- background sync -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background sync from MLflow (first a full read, then increments); idempotent."""
        with self._lock:
            if self._worker is not None:
                return
            self._syncing = True
            self._state.version += 1
            if self._sync is None:
                client = self._client or make_client(self.settings)
                self._sync = MlflowSync(client, self, experiments=self._experiments,
                                        overlap_s=self._overlap_s, reaper=self._reaper,
                                        champions=ChampionReader(client, self.settings.serve_alias))
            self._worker = SyncWorker(self._sync, self, interval=self.settings.sync_interval,
                                      max_backoff=self._max_backoff)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background sync and wait for its thread."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout)

    @property
    def sync_running(self) -> bool:
        """Whether the background sync thread is alive."""
        worker = self._worker
        return worker is not None and worker.alive

    @property
    def sync(self) -> MlflowSync | None:
        """The sync from MLflow once start() created it (tests call its sync_once())."""
        return self._sync

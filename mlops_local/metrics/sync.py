"""Incremental sync of finished runs from the MLflow tracking server into the exporter.

The first sync after a start reads every finished/failed run, newest first, page by page; the gauges
are published from the first page on (recent models are back before the next scrape), the counts
once the read is complete. Later syncs read only runs that ended after the watermark (minus a short
overlap, for runs whose end is recorded late); run ids deduplicate the overlap. Nothing is stored on
disk: MLflow is the source of truth. Any failure is counted and retried with capped exponential
backoff; the thread never dies of it. A refused connection before the first sync worked (MLflow still
starting next to the UI) is waiting, not a failure, for up to STARTUP_GRACE_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mlops_local import tracking
from mlops_local.metrics.champions import Champion, ChampionReader
from mlops_local.metrics.records import RunRecord, record_from_run
from mlops_local.reaper import Reaper
from mlops_local.restclient import ACTIVE_ONLY, Run, TrackingClient
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

PAGE_SIZE = 500  # runs per request: the first page (the gauges) arrives well under a second
DEFAULT_OVERLAP_S = 5.0
MAX_BACKOFF_S = 60.0
BACKOFF_INTERVALS = 4  # by default the backoff stops growing at 4 sync intervals (at most 60 s)
# honcho starts the UI and MLflow together and MLflow takes a while to listen: until the first sync
# succeeds, and for this long at most, a refused connection means "not up yet", not an error.
STARTUP_GRACE_S = 120.0
# How often the sync tries again while MLflow is still starting (a refused connect costs nothing): the
# first read then follows MLflow's start within this, not a whole interval later (scrapes wait for it).
STARTUP_POLL_S = 0.5


class SyncTarget(Protocol):
    """Where a sync puts what it reads (the exporter's state): data flows MLflow -> sync -> target."""

    def apply_records(self, records: Iterable[RunRecord]) -> int: ...
    def notify_listeners(self, runs: Sequence[Run], experiment_names: Mapping[str, str]) -> None: ...
    def record_runs_read(self, runs_read: int) -> None: ...
    def first_page_read(self) -> None: ...
    def complete_bootstrap(self, horizon_ms: int) -> None: ...
    def prune(self, horizon_ms: int) -> None: ...
    def record_sync(self, seconds: float) -> None: ...
    def record_sync_error(self) -> None: ...
    def set_champions(self, champions: Iterable[Champion]) -> None: ...


def make_client(settings: Settings) -> tracking.LazyClient:
    """A client on the configured tracking URI with bounded timeouts: plain HTTP while it can answer (no
    MLflow, pandas or pyarrow in an idle UI process), MLflow's bounded client from the first question
    it cannot (MLflow's auth or TLS settings, a store that is not HTTP)."""
    uri = settings.effective_tracking_uri
    return tracking.LazyClient(uri, tracking.request_timeout(settings),
                               lambda: tracking.new_client(uri, settings))


def backoff_delay(failures: int, interval: float, cap: float) -> float:
    """Seconds before the next sync: the interval, doubled per consecutive failure, at most ``cap``."""
    if failures <= 0:
        return interval
    return min(interval * 2.0 ** failures, max(cap, interval))


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: runs fetched from MLflow, how many were new, pages, time taken."""

    kind: str  # "full" | "incremental"
    fetched: int
    new: int
    pages: int
    seconds: float
    watermark_ms: int
    complete: bool = True  # False when stopped half-way
    first_page_seconds: float | None = None  # full read: when the gauges were back


class MlflowSync:
    """Reads finished runs into ``exporter``: a full read first, then only runs past the watermark."""

    def __init__(self, client: TrackingClient, exporter: SyncTarget, *,
                 experiments: Sequence[str] | None = None, page_size: int = PAGE_SIZE,
                 overlap_s: float | None = None, clock: Callable[[], float] = time.time,
                 reaper: Reaper | None = None, champions: ChampionReader | None = None) -> None:
        self.client = client
        self.reaper = reaper
        self.champions = champions
        self.exporter = exporter
        self.experiments = tuple(experiments) if experiments is not None else None
        self.page_size = page_size
        self.overlap_ms = int(1000 * (DEFAULT_OVERLAP_S if overlap_s is None else overlap_s))
        self.clock = clock
        self.watermark_ms: int | None = None  # None until the full read completed

    def sync_once(self, stop: threading.Event | None = None) -> SyncResult:
        """The full read when none has completed yet, else an incremental read; then orphans are reaped.

        Reaping comes after the read so that a start's first page reaches /metrics as early as before
        (a scrape waits only briefly for it); a run the reaper closes is read by the next sync."""
        result = self.full_read(stop) if self.watermark_ms is None else self.incremental(stop)
        self.read_champions()
        self.reap()
        return result

    def read_champions(self) -> None:
        """Publish the registry's champions; on a failure the last ones stay (the next sync retries)."""
        if self.champions is None:
            return
        try:
            self.exporter.set_champions(self.champions.read({}))
        except Exception as exc:  # noqa: BLE001 - a registry error must not fail the run sync
            log.debug("reading the registry's champions failed: %s", exc)

    def reap(self) -> list[str]:
        """Close runs whose owner process died (see :mod:`mlops_local.reaper`). Its failures are left to
        the next read (MLflow down)."""
        if self.reaper is None:
            return []
        try:
            return self.reaper.reap(self.client, list(self._experiment_names()))
        except Exception as exc:  # noqa: BLE001 - the sync's own read reports an MLflow that is down
            log.debug("reaping orphaned runs failed: %s", exc)
            return []

    def _experiment_names(self) -> dict[str, str]:
        """id -> name of the experiments to read (all active ones unless a list was given)."""
        if self.experiments is not None:
            found = (self.client.get_experiment_by_name(name) for name in self.experiments)
            return {e.experiment_id: e.name for e in found if e is not None and e.lifecycle_stage == "active"}
        names: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_experiments(view_type=ACTIVE_ONLY, max_results=1000,
                                                  page_token=token)
            names.update({e.experiment_id: e.name for e in page})
            token = page.token
            if not token:
                return names

    def _pages(self, names: dict[str, str], filter_string: str, order: str,
               stop: threading.Event | None):
        """Yield pages of runs (raw) for ``filter_string`` ordered by end time ``order``."""
        token = None
        while names:
            page = self.client.search_runs(list(names), filter_string, run_view_type=ACTIVE_ONLY,
                                           max_results=self.page_size,
                                           order_by=[f"attributes.end_time {order}"], page_token=token)
            self.exporter.record_runs_read(len(page))
            self.exporter.notify_listeners(page, names)
            yield page
            token = page.token
            if not token or (stop is not None and stop.is_set()):
                return

    def full_read(self, stop: threading.Event | None = None) -> SyncResult:
        """Read every finished run, newest first: gauges from the first page, counts at the end."""
        started = time.perf_counter()
        names = self._experiment_names()
        fetched = new = pages = 0
        top: int | None = None
        first_page = None
        for page in self._pages(names, "attributes.end_time > 0", "DESC", stop):
            if top is None and len(page):
                # Runs ending later are left to the increments (new runs shift this read's offsets).
                top = max(run.info.end_time or 0 for run in page)
            records = [r for r in (record_from_run(run, names) for run in page) if r is not None]
            new += self.exporter.apply_records(records)
            fetched += len(page)
            pages += 1
            if pages == 1:
                first_page = time.perf_counter() - started
                self.exporter.first_page_read()
        watermark = min(top or 0, int(self.clock() * 1000))
        complete = stop is None or not stop.is_set()
        if complete:
            self.watermark_ms = watermark
            self.exporter.complete_bootstrap(watermark - self.overlap_ms)
        seconds = time.perf_counter() - started
        log.info("full read from MLflow: %d runs in %d pages, %.2f s", fetched, pages, seconds)
        return SyncResult("full", fetched, new, pages, seconds, watermark, complete, first_page)

    def incremental(self, stop: threading.Event | None = None) -> SyncResult:
        """Read runs that ended after the watermark minus the overlap, oldest first."""
        assert self.watermark_ms is not None, "incremental() before a full read"
        started = time.perf_counter()
        names = self._experiment_names()
        since = self.watermark_ms - self.overlap_ms
        fetched = new = pages = 0
        newest = self.watermark_ms
        for page in self._pages(names, f"attributes.end_time > {since}", "ASC", stop):
            records = [r for r in (record_from_run(run, names) for run in page) if r is not None]
            new += self.exporter.apply_records(records)
            newest = max([newest, *(run.info.end_time or 0 for run in page)])
            fetched += len(page)
            pages += 1
        # A run stamped in the future (a skewed clock elsewhere) must not push the watermark past now.
        self.watermark_ms = max(self.watermark_ms, min(newest, int(self.clock() * 1000)))
        self.exporter.prune(self.watermark_ms - self.overlap_ms)
        seconds = time.perf_counter() - started
        log.debug("incremental sync: %d runs fetched, %d new, %.3f s", fetched, new, seconds)
        return SyncResult("incremental", fetched, new, pages, seconds, self.watermark_ms)


def connection_refused(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a refused connection (nothing listens yet), however MLflow wraps it."""
    todo: list[object] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)]
    return False


class SyncWorker:
    """The sync thread: ``sync_once`` every interval, capped exponential backoff on failures."""

    def __init__(self, sync: MlflowSync, exporter: SyncTarget, *, interval: float,
                 max_backoff: float | None = None,
                 wait: Callable[[float], bool] | None = None,
                 startup_grace: float = STARTUP_GRACE_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sync = sync
        self.exporter = exporter
        self.interval = interval
        if max_backoff is None:
            max_backoff = min(MAX_BACKOFF_S, BACKOFF_INTERVALS * interval)
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait  # tests inject a fake clock here
        self._thread: threading.Thread | None = None
        self.failures = 0  # consecutive
        self.startup_grace = startup_grace
        self._monotonic = monotonic
        self._started_at = monotonic()
        self.synced_once = False
        self.waiting_for_mlflow = False  # the last try found MLflow still starting

    def start(self) -> None:
        """Start the daemon thread (the first sync runs at once)."""
        self._started_at = self._monotonic()
        self._thread = threading.Thread(target=self._loop, name="mlops-exporter-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop (between pages) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("exporter sync thread still busy after %.0f s (an MLflow call in flight)",
                            timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_once(self) -> SyncResult | None:
        """One sync; a failure is logged, counted in mlops_sync_errors_total and returns None."""
        self.waiting_for_mlflow = False
        try:
            result = self.sync.sync_once(self._stop)
        except Exception as exc:  # noqa: BLE001 - the thread must survive anything MLflow does
            if self._starting_up(exc):
                log.debug("MLflow is not up yet (connection refused); waiting for it")
                self.waiting_for_mlflow = True
                return None
            self.failures += 1
            self.exporter.record_sync_error()
            delay = backoff_delay(self.failures, self.interval, self.max_backoff)
            if self.failures == 1:
                log.warning("sync from MLflow failed (%s); retrying with backoff", exc)
            else:
                log.debug("sync from MLflow failed again (%d in a row, next in %.0f s): %s",
                          self.failures, delay, exc)
            return None
        if self.failures:
            log.info("sync from MLflow recovered after %d failures", self.failures)
        self.failures = 0
        self.synced_once = True
        if result.complete:
            self.exporter.record_sync(result.seconds)
        return result

    def _starting_up(self, exc: BaseException) -> bool:
        """Whether a failure is MLflow still starting: refused before any sync worked, within the grace."""
        return (not self.synced_once and connection_refused(exc)
                and self._monotonic() - self._started_at < self.startup_grace)

    def next_delay(self) -> float:
        """Seconds until the next sync: soon while MLflow is starting, else the interval with backoff."""
        if self.waiting_for_mlflow:
            return min(STARTUP_POLL_S, self.interval)
        return backoff_delay(self.failures, self.interval, self.max_backoff)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            if self._wait(self.next_delay()):
                return

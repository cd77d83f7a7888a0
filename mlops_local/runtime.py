"""Process-wide resources of the UI process, started once however many reruns and tabs there are.

`serve ui` calls `ensure_runtime` before Streamlit starts, so /metrics is up before any browser
connects. Page scripts call it too: in the UI process it returns the running instance; under
AppTest (no `serve ui`) the first call starts it. A lock makes concurrent first calls safe.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from mlops_local.metrics.exporter import ModelMetricsExporter
from mlops_local.metrics.promotions import PromotionMetrics
from mlops_local.metrics.registry import build_registry
from mlops_local.metrics.server import MetricsServer, start_metrics_server
from mlops_local.metrics.sweeps import SweepMetrics
from mlops_local.reaper import Reaper
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_runtime: Runtime | None = None


@dataclass
class Runtime:
    """What the UI process shares across sessions: settings, registry, /metrics server, exporter."""

    settings: Settings
    registry: CollectorRegistry
    metrics_server: MetricsServer
    exporter: ModelMetricsExporter
    sweeps: SweepMetrics
    promotions: PromotionMetrics | None = None  # verdicts of the promotion gate (Runs page and CLI)

    def stop(self) -> None:
        """Stop the sync thread, then the /metrics server."""
        # The thread is a daemon: do not hold the process's exit for an MLflow call in flight.
        self.exporter.stop(timeout=3.0)
        self.metrics_server.stop()


def ensure_runtime(settings: Settings) -> Runtime:
    """Start the process's runtime on first call; later calls return the same instance."""
    global _runtime
    with _lock:
        if _runtime is None:
            registry = build_registry()
            # Runs left RUNNING by dead processes are closed at start and on every sync.
            exporter = ModelMetricsExporter(registry, settings, reaper=Reaper(registry))
            sweeps = SweepMetrics(registry, max_series=settings.max_series)
            exporter.add_run_listener(sweeps.observe_runs)  # sweeps from the CLI/other machines
            promotions = PromotionMetrics(registry)
            exporter.add_run_listener(promotions.observe_runs)  # `mlops-local promote` verdicts
            server = start_metrics_server(registry, settings.host, settings.metrics_port)
            # After the server: a scrape during the first read waits briefly for its first page.
            exporter.start()
            _runtime = Runtime(settings=settings, registry=registry, metrics_server=server,
                               exporter=exporter, sweeps=sweeps, promotions=promotions)
            log.info("runtime started (metrics on %s, syncing from %s)", server.url,
                     settings.effective_tracking_uri)
        return _runtime


def get_runtime() -> Runtime | None:
    """The running runtime, or None when this process has not started one."""
    return _runtime


def shutdown_runtime() -> None:
    """Stop the runtime (tests and process exit)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.stop()
            _runtime = None

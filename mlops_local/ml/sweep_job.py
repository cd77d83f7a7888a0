"""A sweep started from the UI, on a worker thread: the page polls it and its Stop button cancels it.

No Streamlit in here (the worker thread must never call it). A session holds at most one running
sweep: :func:`start_sweep_job` checks and starts under a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.ml.sweep_types import SweepProgress, SweepResult, SweepSpec
from mlops_local.settings import Settings

log = logging.getLogger(__name__)
_start_lock = threading.Lock()


@dataclass
class SweepJob:
    """One sweep on a worker thread: live progress, then a result or an error message."""

    spec: SweepSpec
    settings: Settings
    frame: pd.DataFrame | None = None
    client: MlflowClient | None = None
    metrics: Any = None  # mlops_local.metrics.sweeps.SweepMetrics of the UI process
    progress: SweepProgress | None = None
    result: SweepResult | None = None
    error: str | None = None
    started: float = 0.0
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> SweepJob:
        """Start the worker thread (once)."""
        if self._thread is not None:
            raise RuntimeError("this sweep job was already started")
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"mlops-sweep-{self.spec.model}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the sweep to stop: no new trials, running ones KILLED, parent closed."""
        self.cancel.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopping(self) -> bool:
        return self.cancel.is_set() and not self.done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep ends (True) or ``timeout`` passes (False)."""
        return self._done.wait(timeout)

    def elapsed(self) -> float:
        """Seconds since the start (frozen once finished)."""
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started if self.started else 0.0

    def history(self) -> list[dict[str, object]]:
        """trial, status, score and best-so-far rows of the trials ended so far (for the live chart)."""
        progress = self.progress
        if progress is None:
            return []
        rows, best = [], None
        for outcome in sorted(progress.outcomes, key=lambda o: o.number):
            score = outcome.score if outcome.status == "FINISHED" else None
            if score is not None:
                best = score if best is None else (max(best, score) if progress.higher_is_better
                                                   else min(best, score))
            rows.append({"trial": outcome.number, "status": outcome.status, "score": score,
                         "best so far": best})
        return rows

    def _on_trial(self, progress: SweepProgress) -> None:
        self.progress = progress  # one reference swap: the page reads a consistent snapshot

    def _run(self) -> None:
        from mlops_local.ml.sweep import run_sweep

        try:
            self.result = run_sweep(self.spec, self.settings, client=self.client, cancel=self.cancel,
                                    on_trial=self._on_trial, metrics=self.metrics, frame=self.frame)
        except (UserError, ServiceUnavailable) as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the page; the sweep closed its runs
            log.exception("sweep of %s on %s failed", self.spec.model, self.spec.dataset.name)
            self.error = f"sweep failed: {type(exc).__name__}: {exc}"
        finally:
            self.finished = time.perf_counter()
            self._done.set()


def start_sweep_job(holder: MutableMapping[str, Any], key: str,
                    factory: Callable[[], SweepJob]) -> tuple[SweepJob, bool]:
    """The running job under ``holder[key]``, or a new one started; (job, started_now)."""
    with _start_lock:
        job = holder.get(key)
        if isinstance(job, SweepJob) and job.running:
            return job, False
        job = factory()
        holder[key] = job
        job.start()
        return job, True

"""A sweep started from the UI, on a worker thread: the page polls it and its Stop button cancels it.

No Streamlit in here (the worker thread must never call it). A session holds at most one running
sweep (:func:`mlops_local.background.start_once`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from mlops_local.background import BackgroundJob
from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.settings import Settings
from mlops_local.sweep.spec import SweepProgress, SweepResult, SweepSpec

log = logging.getLogger(__name__)


@dataclass
class SweepJob(BackgroundJob):
    """One sweep on a worker thread: live progress, then a result or an error message."""

    spec: SweepSpec
    settings: Settings
    frame: pd.DataFrame | None = None
    client: MlflowClient | None = None
    metrics: Any = None  # mlops_local.metrics.sweeps.SweepMetrics of the UI process
    progress: SweepProgress | None = None
    result: SweepResult | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def thread_name(self) -> str:
        return f"mlops-sweep-{self.spec.model}"

    def stop(self) -> None:
        """Ask the sweep to stop: no new trials, running ones KILLED (finished ones count), parent closed."""
        self.cancel.set()

    @property
    def stopping(self) -> bool:
        return self.cancel.is_set() and not self.done

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
        from mlops_local.sweep.run import run_sweep

        try:
            self.result = run_sweep(self.spec, self.settings, client=self.client, cancel=self.cancel,
                                    on_trial=self._on_trial, metrics=self.metrics, frame=self.frame)
        except (UserError, ServiceUnavailable) as exc:
            self.error = str(exc)
        except Exception as exc:  # shown on the page; the sweep closed its runs
            log.exception("sweep of %s on %s failed", self.spec.model, self.spec.dataset.name)
            self.error = f"sweep failed: {type(exc).__name__}: {exc}"

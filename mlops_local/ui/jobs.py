"""A training started from the UI, run on a worker thread so that the page stays responsive.

The page script only polls the job: a rerun (another click, a page switch) never interrupts a
training half-way, and a session holds at most one running job, so a double click cannot start a
second run. No Streamlit in here: the worker thread must never call Streamlit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from mlops_local.background import BackgroundJob, start_once
from mlops_local.errors import UserError
from mlops_local.ml.types import STEPS, TrainRequest, TrainResult
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

TrainFn = Callable[..., TrainResult]
PublishFn = Callable[[TrainResult], None]
BaselineFn = Callable[[TrainRequest], dict[str, float]]

STEP_LABELS = {
    "load": "Load data", "split": "Split train/test", "fit": "Fit model", "evaluate": "Evaluate",
    "log": "Log to MLflow", "publish": "Publish metrics",
}


@dataclass
class StepState:
    """One step as the page shows it: label, state (done, running, waiting) and seconds spent."""

    step: str
    label: str
    state: str
    seconds: float | None


@dataclass
class TrainingJob(BackgroundJob):
    """One training on a worker thread: progress events, then a result or an error message."""

    request: TrainRequest
    settings: Settings
    train_fn: TrainFn
    frame: pd.DataFrame | None = None
    client: MlflowClient | None = None
    publish: PublishFn | None = None
    baseline: BaselineFn | None = None
    events: list[tuple[str, float]] = field(default_factory=list)
    result: TrainResult | None = None
    best_before: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    warning: str | None = None

    def thread_name(self) -> str:
        return f"mlops-train-{self.request.model}"

    def _progress(self, step: str, elapsed: float) -> None:
        # list.append is atomic; the page reads a snapshot with list(self.events).
        self.events.append((step, elapsed))

    def _run(self) -> None:
        baseline = self._start_baseline()
        try:
            kwargs: dict[str, object] = {"progress": self._progress, "frame": self.frame}
            if self.client is not None:
                kwargs["client"] = self.client
            result = self.train_fn(self.request, self.settings, **kwargs)
            self._progress("publish", time.perf_counter() - self.started)
            self._publish(result)
            if baseline is not None:
                baseline.join()
            self.result = result
        except UserError as exc:
            self.error = str(exc)
        except Exception as exc:  # the page shows it; the run was already marked FAILED
            log.exception("training %s on %s failed", self.request.model, self.request.dataset.name)
            self.error = f"training failed: {type(exc).__name__}: {exc}"

    def _start_baseline(self) -> threading.Thread | None:
        """Read the best earlier runs while the model trains (they all started before this one)."""
        if self.baseline is None:
            return None

        def read() -> None:
            try:
                self.best_before = self.baseline(self.request)
            except Exception:  # the cards then show no delta
                log.warning("could not read earlier runs for the comparison", exc_info=True)

        thread = threading.Thread(target=read, daemon=True, name="mlops-train-baseline")
        thread.start()
        return thread

    def _publish(self, result: TrainResult) -> None:
        """Publish the metrics on /metrics; a failure here does not fail the training."""
        if self.publish is None:
            return
        try:
            self.publish(result)
        except Exception as exc:
            log.warning("publishing run %s to /metrics failed", result.run_id, exc_info=True)
            self.warning = f"metrics not published to /metrics: {exc}"

    def steps(self) -> list[StepState]:
        """Every step with its state and duration so far, in order."""
        events = list(self.events)
        starts = {step: at for step, at in events}
        current = events[-1][0] if events else None
        out = []
        for i, step in enumerate(STEPS):
            label = STEP_LABELS.get(step, step)
            if step not in starts:
                out.append(StepState(step, label, "waiting", None))
                continue
            later = [starts[s] for s in STEPS[i + 1:] if s in starts]
            if later:
                out.append(StepState(step, label, "done", later[0] - starts[step]))
            elif step == current and not self.done:
                out.append(StepState(step, label, "running", self.elapsed() - starts[step]))
            else:
                state = "failed" if self.error else "done"
                out.append(StepState(step, label, state, self.elapsed() - starts[step]))
        return out

    def fraction(self) -> float:
        """Share of the steps started or done (for a progress bar)."""
        if self.done and self.error is None:
            return 1.0
        started = {step for step, _ in list(self.events)}
        return min(1.0, len(started) / len(STEPS))


def start_job(holder: MutableMapping[str, Any], key: str,
              factory: Callable[[], TrainingJob]) -> tuple[TrainingJob, bool]:
    """The running training under ``holder[key]``, or a new one started; (job, started_now)."""
    return start_once(holder, key, TrainingJob, factory)

"""The loop of one running sweep: keep the workers busy, record each outcome, stop cleanly on cancel."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.ml.types import TrainRequest
from mlops_local.runmeta import TAG_CLIENT, TAG_GOAL, TAG_ROLE, TAG_SCORE_METRIC, TAG_SOURCE, TAG_TRIAL
from mlops_local.settings import Settings
from mlops_local.sweep.executor import TrialExecutor, open_executor
from mlops_local.sweep.plan import Plan, worker_env
from mlops_local.sweep.samplers import make_search
from mlops_local.sweep.spec import SweepProgress, TrialOutcome, better
from mlops_local.sweep.tracking import (
    close_child,
    kill_running_children,
    log_progress,
    progress_metrics,
    record_failed_child,
)
from mlops_local.sweep.worker import TrialTask, baseline_score, find_child, run_trial

log = logging.getLogger(__name__)

OnTrial = Callable[[SweepProgress], None]
POLL_S = 0.2
PROGRESS_EVERY_S = 2.0  # the parent's live metrics: at most one request this often (the server is shared)
UNREACHABLE_LIMIT = 2
BASELINE = -1  # the done queue's number for the baseline fit (SweepSpec.baseline)


def _mlflow_down(outcome: TrialOutcome) -> bool:
    """Whether a trial failed because the tracking server did not answer (not because of its params)."""
    error = outcome.error or ""
    down = error.startswith("ServiceUnavailable") or "API request to" in error
    return outcome.status == "FAILED" and down


class SweepRun:
    """One running sweep: schedules trials, records outcomes, cancels and closes cleanly."""

    def __init__(self, plan: Plan, settings: Settings, client: MlflowClient, experiment_id: str, parent: str,
                 executor: TrialExecutor, frame: Any, cancel: threading.Event, on_trial: OnTrial | None,
                 metrics: Any) -> None:
        self.plan, self.settings, self.client = plan, settings, client
        self.experiment_id, self.parent, self.executor = experiment_id, parent, executor
        self.frame, self.cancel, self.on_trial, self.metrics = frame, cancel, on_trial, metrics
        self.spec = plan.spec
        self.search = make_search(self.spec.strategy, plan.space, total=plan.total, seed=self.spec.seed,
                                  grid_points=self.spec.grid_points, higher_is_better=plan.higher_is_better,
                                  parallel=executor.slots)
        self.done: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.inflight: dict[int, TrialTask] = {}
        self.ran_on: dict[int, TrialExecutor] = {}  # the pool of each trial (a broken pool is replaced once)
        self.outcomes: list[TrialOutcome] = []
        self.best: TrialOutcome | None = None
        self.env = worker_env(settings)
        self.threads = executor.threads_per_trial
        self.best_archive: bytes | str | None = None  # models = best: the best trial's model (a zip's bytes
        # or path), kept by its worker; local workers write them into model_dir (set by the sweep)
        self.model_dir: str | None = None
        self.unreachable = 0  # trials in a row that failed because MLflow did not answer
        self.pending_progress: list[Metric] = []
        self.progress_logged = 0.0
        self.baseline: float | None = None  # the default hyperparameters' score, once known
        self.baseline_pending = False

    # -- tasks -----------------------------------------------------------------------------------
    def trial_tags(self, number: int) -> dict[str, str]:
        # The client too: a trial that fails before train() tags it is still this machine's.
        return {TAG_SOURCE: "sweep", TAG_CLIENT: self.settings.client_name, TAG_ROLE: "trial",
                TAG_TRIAL: str(number),
                TAG_SCORE_METRIC: self.plan.score_metric,
                TAG_GOAL: "maximize" if self.plan.higher_is_better else "minimize"}

    def task(self, number: int, params: dict[str, object]) -> TrialTask:
        spec = self.spec
        everything = spec.models == "all"  # else the best trial's model, plots and dataset come at the end
        request = TrainRequest(dataset=spec.dataset, model=spec.model, params=params,
                               test_size=spec.test_size, seed=spec.seed, cv_folds=spec.cv_folds,
                               experiment=spec.experiment,
                               source="sweep", parent_run_id=self.parent,
                               log_model=everything, log_plots=everything, log_dataset=everything,
                               extra_tags=self.trial_tags(number))
        best = self.best
        return TrialTask(number, request, self.settings, self.client.tracking_uri, self.experiment_id,
                         self.parent, self.plan.score_metric, self.env, self.threads,
                         cancel_event=self.executor.cancel_event, keep_model=spec.models == "best",
                         beat=None if best is None or best.score is None else (best.score, best.number),
                         higher_is_better=self.plan.higher_is_better,
                         model_dir=self.model_dir if self.executor.cancel_event is None else None)

    def submit(self, number: int, values: dict[str, object]) -> None:
        try:
            params = self.plan.space.complete(values)
        except UserError as exc:
            self.record(TrialOutcome(number, dict(values), "FAILED", error=str(exc)))
            return
        task = self.task(number, params)
        self.inflight[number] = task
        future = self.submit_task(run_trial, task, self.frame)
        self.ran_on[number] = self.executor
        future.add_done_callback(lambda f, n=number: self.done.put((n, f)))

    def submit_baseline(self) -> None:
        """Score the default hyperparameters on a worker, first (the charts draw it from the start)."""
        future = self.submit_task(baseline_score, self.task(BASELINE, {}), self.frame)
        self.baseline_pending = True
        future.add_done_callback(lambda f: self.done.put((BASELINE, f)))

    def take_baseline(self, future: Any) -> None:
        self.baseline_pending = False
        try:
            score = future.result()
        except BaseException as exc:  # noqa: BLE001 - the trials stand; the charts go without a baseline
            log.warning("the default hyperparameters could not be scored: %s: %s", type(exc).__name__, exc)
            return
        if score is not None and math.isfinite(score):
            self.baseline = float(score)
            self.pending_progress.append(Metric("baseline_score", self.baseline, int(time.time() * 1000), 0))

    def submit_task(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit to the workers; a pool a worker death broke since the last trial is replaced first."""
        try:
            return self.executor.submit(fn, *args)
        except BrokenProcessPool:
            self.reopen()
            return self.executor.submit(fn, *args)

    # -- outcomes --------------------------------------------------------------------------------
    def resolve(self, number: int, future: Any) -> TrialOutcome:
        task = self.inflight.pop(number)
        pool = self.ran_on.pop(number, None)
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - a worker died or the task could not run
            outcome = TrialOutcome(number, dict(task.request.params), "FAILED",
                                   error=f"{type(exc).__name__}: {exc or 'worker process died'}")
            if isinstance(exc, BrokenProcessPool) and pool is self.executor:
                self.reopen()
        return outcome

    def record(self, outcome: TrialOutcome) -> None:
        if outcome.status == "FAILED":
            outcome = self.close_failed(outcome)
        self.outcomes.append(outcome)
        archive, outcome.model_archive = outcome.model_archive, None
        if better(outcome, self.best, self.plan.higher_is_better):
            self.best = outcome
            archive, self.best_archive = self.best_archive, archive
        if isinstance(archive, str):  # a model file no longer needed
            Path(archive).unlink(missing_ok=True)
        if outcome.status != "KILLED":
            self.search.tell(outcome.number, outcome.score if outcome.status == "FINISHED" else None)
        self.pending_progress.extend(progress_metrics(len(self.outcomes), outcome, self.best))
        if time.monotonic() - self.progress_logged >= PROGRESS_EVERY_S:
            self.flush_progress()
        if self.metrics is not None and outcome.run_id:
            self.metrics.observe_trial(
                outcome.run_id, outcome.status, experiment=self.spec.experiment, dataset=self.plan.dataset,
                model=self.spec.model, score_metric=self.plan.score_metric,
                higher_is_better=self.plan.higher_is_better, sweep_id=self.parent, score=outcome.score)
        log.debug("trial %d %s %s=%s", outcome.number, outcome.status, self.plan.score_metric, outcome.score)
        if self.on_trial is not None:
            self.on_trial(self.progress())
        self.unreachable = self.unreachable + 1 if _mlflow_down(outcome) else 0
        if self.unreachable >= UNREACHABLE_LIMIT:
            raise ServiceUnavailable(f"MLflow at {self.client.tracking_uri} stopped answering; the sweep "
                                     f"stopped after {self.unreachable} trials failed on it: {outcome.error}")

    def flush_progress(self) -> None:
        """Send the progress points gathered since the last call (one request, not one per trial)."""
        pending, self.pending_progress = self.pending_progress, []
        log_progress(self.client, self.parent, pending)
        self.progress_logged = time.monotonic()

    def close_failed(self, outcome: TrialOutcome) -> TrialOutcome:
        """Make sure a failed trial is a FAILED child carrying its error (or what its child says it is):
        the trial failed in train() (which closed its child FAILED) or its worker died."""
        try:
            if outcome.run_id is None:
                child = find_child(self.client, self.experiment_id, self.parent, outcome.number)
                if child is not None and child.info.status == "FINISHED":
                    # The trial was logged; its result did not come back (its worker died, say).
                    metrics = dict(child.data.metrics)
                    return TrialOutcome(outcome.number, outcome.params, "FINISHED", child.info.run_id,
                                        metrics, score=metrics.get(self.plan.score_metric),
                                        model_error="its worker did not send the trial's result back")
                outcome.run_id = child.info.run_id if child is not None else None
                if child is not None and child.info.status == "RUNNING":
                    close_child(self.client, child.info.run_id, "FAILED", outcome.error or "failed")
            if outcome.run_id is None:
                outcome.run_id = record_failed_child(self.client, self.experiment_id, self.parent,
                                                     self.trial_tags(outcome.number), outcome)
        except MlflowException:
            log.error("could not record failed trial %d in MLflow", outcome.number, exc_info=True)
        return outcome

    def progress(self) -> SweepProgress:
        return SweepProgress(self.parent, self.plan.total, list(self.outcomes),
                             self.plan.score_metric, self.plan.higher_is_better, self.best, self.baseline)

    def reopen(self) -> None:
        """A local worker died (out of memory?): the pool is broken, start a fresh one."""
        log.warning("a worker process died; restarting the local workers")
        self.executor.abort()
        self.executor = open_executor(self.plan.jobs, None, self.env, self.settings.http_timeout)

    # -- main loop ---------------------------------------------------------------------------------
    def loop(self) -> None:
        exhausted = False
        if self.spec.baseline and not self.cancel.is_set():
            self.submit_baseline()
        while True:
            while not exhausted and not self.cancel.is_set() \
                    and len(self.inflight) + self.baseline_pending < self.executor.slots:
                asked = self.search.ask()
                if asked is None:
                    exhausted = True
                    break
                self.submit(*asked)
            if self.cancel.is_set() or not (self.inflight or self.baseline_pending):
                return
            try:
                number, future = self.done.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if number == BASELINE:
                self.take_baseline(future)
            else:
                self.record(self.resolve(number, future))

    def stop(self) -> list[TrialOutcome]:
        """Cancel: stop the workers, close every child still running; returns what they became.

        A trial whose score reached MLflow is a result (FINISHED, it counts for the best) even if its
        worker was stopped while keeping its model; only trials stopped before their score are KILLED.
        """
        self.executor.abort()
        while True:  # results that came back before the workers stopped are real results
            try:
                number, future = self.done.get_nowait()
            except queue.Empty:
                break
            if number in self.inflight and future.done() and not future.cancelled():
                try:
                    outcome = future.result()
                except BaseException:  # noqa: BLE001 - killed mid-trial: handled below
                    continue
                self.inflight.pop(number)
                self.record(outcome)
        killed = dict(kill_running_children(self.client, self.experiment_id, self.parent,
                                            scored=self.plan.score_metric))
        stopped = []
        for number, task in sorted(self.inflight.items()):
            child = find_child(self.client, self.experiment_id, self.parent, number)
            if child is None:
                continue  # never started
            status = "KILLED" if number in killed or child.info.status != "FINISHED" else "FINISHED"
            outcome = TrialOutcome(number, dict(task.request.params), status, run_id=child.info.run_id,
                                   metrics=dict(child.data.metrics),
                                   score=child.data.metrics.get(self.plan.score_metric)
                                   if status == "FINISHED" else None,
                                   error="cancelled" if status == "KILLED" else None)
            stopped.append(outcome)
            self.record(outcome)
        self.inflight.clear()
        return stopped

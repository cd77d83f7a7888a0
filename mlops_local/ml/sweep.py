"""Hyperparameter sweeps: many tracked trainings of one model as child runs of one parent run.

    result = run_sweep(SweepSpec(DatasetSpec("co2_canada"), "random_forest", strategy="random",
                                 trials=24, ranges={"n_estimators": "20:200:log"}), settings)

Everything the user controls is validated before any run exists (UserError). Trials run on local
worker processes or a Dask cluster (:mod:`sweep_exec`), each one :func:`training.train` call
(:mod:`sweep_worker`). A failed trial is a FAILED child and the sweep goes on. Cancelling (the
``cancel`` event, or Ctrl-C in the thread running the sweep) stops scheduling, kills what runs, marks
running children KILLED and closes the parent KILLED: nothing is left RUNNING.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.errors import UserError
from mlops_local.ml import evaluation
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.sweep_exec import TrialExecutor, check_jobs, open_executor
from mlops_local.ml.sweep_space import SearchSpace, build_space, check_grid_points
from mlops_local.ml.sweep_strategies import Strategy, make_strategy
from mlops_local.ml.sweep_tracking import (
    create_parent,
    fail_child,
    finish_parent,
    kill_running_children,
    log_progress,
    record_failed_child,
    set_state,
)
from mlops_local.ml.sweep_types import (
    METRICS,
    STRATEGIES,
    TAG_GOAL,
    TAG_ROLE,
    TAG_SCORE_METRIC,
    TAG_TRIAL,
    SweepProgress,
    SweepResult,
    SweepSpec,
    TrialOutcome,
    score_key,
)
from mlops_local.ml.sweep_worker import TrialTask, find_child, log_best_model, run_trial
from mlops_local.ml.types import TAG_SOURCE, TrainRequest
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

OnTrial = Callable[[SweepProgress], None]
_POLL_S = 0.2


@dataclass
class Plan:
    """A validated sweep: search space, strategy, score, the dataset's display name."""

    spec: SweepSpec
    space: SearchSpace
    strategy: Strategy
    score_metric: str
    higher_is_better: bool
    dataset: str
    jobs: int | None


def plan_sweep(spec: SweepSpec, frame: pd.DataFrame | None = None, *, load: bool = True) -> Plan:
    """Validate ``spec`` (UserError naming the problem) and build its space and strategy."""
    if spec.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {spec.strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if spec.metric not in METRICS:
        raise UserError(f"unknown metric {spec.metric!r}; choose one of: {', '.join(METRICS)}")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed < 2**32:
        raise UserError(f"seed must be an integer between 0 and {2**32 - 1}, got {spec.seed!r}")
    if not isinstance(spec.experiment, str) or not spec.experiment.strip():
        raise UserError("experiment name must not be empty")
    jobs = check_jobs(spec.jobs)
    points = check_grid_points(spec.grid_points)
    if spec.alias and not spec.register:
        raise UserError("--alias needs --register NAME (the registered model the alias belongs to)")
    if spec.register:
        if not spec.log_best_model:
            raise UserError("--register needs the best model to be logged (drop --no-model)")
        from mlops_local.runs import validate_registration

        validate_registration(spec.register.strip(), (spec.alias or "").strip() or None)
    evaluation.validate_split(10**6, spec.test_size, spec.cv_folds)
    try:
        metric_key, higher = score_key(spec.metric, spec.cv_folds)
    except ValueError:
        raise UserError(f"metric {spec.metric!r} has no cross-validated version; with --cv use r2 or "
                        "rmse") from None
    space = build_space(spec.model, spec.ranges, spec.search, spec.fixed)
    strategy = make_strategy(spec.strategy, space, trials=spec.trials, seed=spec.seed, grid_points=points,
                             higher_is_better=higher, parallel=jobs or 2)
    name = spec.dataset.name
    if load:
        data = load_dataset(spec.dataset, frame)
        evaluation.validate_split(len(data.y), spec.test_size, spec.cv_folds)
        name = data.name
    return Plan(spec, space, strategy, metric_key, higher, name, jobs)


def better(a: TrialOutcome, b: TrialOutcome | None, higher_is_better: bool) -> bool:
    """Whether finished trial ``a`` beats ``b`` (ties: the earlier trial stays best)."""
    if a.status != "FINISHED" or a.score is None or not math.isfinite(a.score):
        return False
    if b is None or b.score is None:
        return True
    return a.score > b.score or (a.score == b.score and a.number < b.number) if higher_is_better \
        else a.score < b.score or (a.score == b.score and a.number < b.number)


def worker_env(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The bounded MLflow client settings workers apply (values set in this process win)."""
    return tuple((k, os.environ.get(k, v)) for k, v in tracking.bounded_client_env(settings).items())


@contextmanager
def _no_interrupts():
    """Finish cleanup even if Ctrl-C is pressed again (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Sweep:
    """One running sweep: schedules trials, records outcomes, cancels and closes cleanly."""

    def __init__(self, plan: Plan, settings: Settings, client: MlflowClient, experiment_id: str, parent: str,
                 executor: TrialExecutor, frame: Any, cancel: threading.Event, on_trial: OnTrial | None,
                 metrics: Any) -> None:
        self.plan, self.settings, self.client = plan, settings, client
        self.experiment_id, self.parent, self.executor = experiment_id, parent, executor
        self.frame, self.cancel, self.on_trial, self.metrics = frame, cancel, on_trial, metrics
        self.spec = plan.spec
        self.done: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.inflight: dict[int, TrialTask] = {}
        self.outcomes: list[TrialOutcome] = []
        self.best: TrialOutcome | None = None
        self.env = worker_env(settings)
        self.threads = 1

    # -- tasks -----------------------------------------------------------------------------------
    def trial_tags(self, number: int) -> dict[str, str]:
        return {TAG_SOURCE: "sweep", TAG_ROLE: "trial", TAG_TRIAL: str(number),
                TAG_SCORE_METRIC: self.plan.score_metric,
                TAG_GOAL: "maximize" if self.plan.higher_is_better else "minimize"}

    def task(self, number: int, params: dict[str, object]) -> TrialTask:
        spec = self.spec
        request = TrainRequest(dataset=spec.dataset, model=spec.model, params=params,
                               test_size=spec.test_size, seed=spec.seed, cv_folds=spec.cv_folds,
                               experiment=spec.experiment,
                               source="sweep", parent_run_id=self.parent, log_model=False,
                               extra_tags=self.trial_tags(number))
        return TrialTask(number, request, self.settings, self.client.tracking_uri, self.experiment_id,
                         self.parent, self.plan.score_metric, self.env, self.threads)

    def submit(self, number: int, values: dict[str, object]) -> None:
        try:
            params = self.plan.space.complete(values)
        except UserError as exc:
            self.record(TrialOutcome(number, dict(values), "FAILED", error=str(exc)))
            return
        task = self.task(number, params)
        self.inflight[number] = task
        future = self.executor.submit(run_trial, task, self.frame)
        future.add_done_callback(lambda f, n=number: self.done.put((n, f)))

    # -- outcomes --------------------------------------------------------------------------------
    def resolve(self, number: int, future: Any) -> TrialOutcome:
        task = self.inflight.pop(number)
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - a worker died or the task could not run
            outcome = TrialOutcome(number, dict(task.request.params), "FAILED",
                                   error=f"{type(exc).__name__}: {exc or 'worker process died'}")
            if isinstance(exc, BrokenProcessPool):
                self.reopen()
        return outcome

    def record(self, outcome: TrialOutcome) -> None:
        if outcome.status == "FAILED":
            self.close_failed(outcome)
        self.outcomes.append(outcome)
        if better(outcome, self.best, self.plan.higher_is_better):
            self.best = outcome
        if outcome.status != "KILLED":
            self.plan.strategy.tell(outcome.number, outcome.score if outcome.status == "FINISHED" else None)
        log_progress(self.client, self.parent, len(self.outcomes), outcome, self.best)
        if self.metrics is not None and outcome.run_id:
            self.metrics.observe_trial(
                outcome.run_id, outcome.status, experiment=self.spec.experiment, dataset=self.plan.dataset,
                model=self.spec.model, score_metric=self.plan.score_metric,
                higher_is_better=self.plan.higher_is_better, sweep_id=self.parent, score=outcome.score)
        log.info("trial %d %s %s=%s", outcome.number, outcome.status, self.plan.score_metric, outcome.score)
        if self.on_trial is not None:
            self.on_trial(self.progress())

    def close_failed(self, outcome: TrialOutcome) -> None:
        """Make sure a failed trial is a FAILED child carrying its error."""
        try:
            if outcome.run_id is None:
                child = find_child(self.client, self.experiment_id, self.parent, outcome.number)
                outcome.run_id = child.info.run_id if child is not None else None
                if child is not None and child.info.status == "RUNNING":
                    fail_child(self.client, child.info.run_id, outcome.error or "failed")
            if outcome.run_id is None:
                outcome.run_id = record_failed_child(self.client, self.experiment_id, self.parent,
                                                     self.trial_tags(outcome.number), outcome)
        except MlflowException:
            log.error("could not record failed trial %d in MLflow", outcome.number, exc_info=True)

    def progress(self) -> SweepProgress:
        return SweepProgress(self.parent, self.plan.strategy.total, list(self.outcomes),
                             self.plan.score_metric, self.plan.higher_is_better, self.best)

    def reopen(self) -> None:
        """A local worker died (out of memory?): the pool is broken, start a fresh one."""
        log.warning("a worker process died; restarting the local workers")
        self.executor.abort()
        self.executor = open_executor(self.plan.jobs, None, self.env, self.settings.http_timeout)

    # -- main loop ---------------------------------------------------------------------------------
    def loop(self) -> None:
        strategy = self.plan.strategy
        exhausted = False
        while True:
            while not exhausted and not self.cancel.is_set() and len(self.inflight) < self.executor.slots:
                asked = strategy.ask()
                if asked is None:
                    exhausted = True
                    break
                self.submit(*asked)
            if self.cancel.is_set() or not self.inflight:
                return
            try:
                number, future = self.done.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            self.record(self.resolve(number, future))

    def wait(self, future: Any) -> Any:
        """The result of one executor future, watching for cancellation."""
        box: queue.Queue[Any] = queue.Queue()
        future.add_done_callback(box.put)
        while True:
            if self.cancel.is_set():
                raise KeyboardInterrupt
            try:
                return box.get(timeout=_POLL_S).result()
            except queue.Empty:
                continue

    def stop(self) -> list[TrialOutcome]:
        """Cancel: stop the workers, close every child still running (KILLED); returns what they became."""
        try:
            set_state(self.client, self.parent, "cancelling")
        except MlflowException:
            log.warning("could not flag sweep %s as cancelling", self.parent, exc_info=True)
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
        killed = dict(kill_running_children(self.client, self.experiment_id, self.parent))
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


def run_sweep(spec: SweepSpec, settings: Settings, *, client: MlflowClient | None = None,
              cancel: threading.Event | None = None, on_trial: OnTrial | None = None, metrics: Any = None,
              frame: pd.DataFrame | None = None) -> SweepResult:
    """Run the sweep ``spec`` and track it in MLflow; returns when it finished or was cancelled.

    ``cancel``: set it (e.g. the UI's Stop button) to stop the sweep; Ctrl-C does the same when the
    sweep runs in the main thread. ``on_trial`` is called after each trial. ``metrics`` (a
    :class:`mlops_local.metrics.sweeps.SweepMetrics`) is updated as trials end. ``frame``: an uploaded
    table (``spec.dataset.name`` is then its file name).
    """
    start = time.perf_counter()
    plan = plan_sweep(spec, frame)
    if client is None:
        client = tracking.connect(settings).client
    else:
        tracking.configure(settings)
    uri = client.tracking_uri
    if spec.dask_scheduler and not uri.startswith(("http://", "https://")):
        raise UserError(f"--dask-scheduler needs an MLflow tracking server the workers can reach over "
                        f"HTTP; the tracking URI is {uri} (start `mlops-local serve mlflow` or set "
                        "MLFLOW_TRACKING_URI)")
    experiment_id = tracking.experiment_for(client, settings, spec.experiment)
    cancel = cancel or threading.Event()
    executor = open_executor(plan.jobs, spec.dask_scheduler, worker_env(settings), settings.http_timeout)
    try:
        if spec.strategy == "optuna" and plan.jobs is None:
            plan = replace(plan, strategy=make_strategy(
                "optuna", plan.space, trials=spec.trials, seed=spec.seed, grid_points=spec.grid_points,
                higher_is_better=plan.higher_is_better, parallel=executor.slots))
        parent = create_parent(client, experiment_id, spec, plan.space, dataset=plan.dataset,
                               total=plan.strategy.total, score_metric=plan.score_metric,
                               higher_is_better=plan.higher_is_better, executor=executor.label)
    except BaseException:
        executor.abort()
        raise
    if metrics is not None:
        metrics.sweep_started(parent)
    sweep = _Sweep(plan, settings, client, experiment_id, parent, executor,
                   executor.share(frame), cancel, on_trial, metrics)
    try:
        return _finish(sweep, start)
    finally:
        if metrics is not None:
            metrics.sweep_ended(parent)


def _finish(sweep: _Sweep, start: float) -> SweepResult:
    spec, client, settings = sweep.spec, sweep.client, sweep.settings
    model_uri = version = None
    warnings: list[str] = []
    status, state, error = "FINISHED", "finished", None
    try:
        try:
            sweep.loop()
            if not sweep.cancel.is_set():
                model_uri, version = _best_model(sweep, warnings)
        except KeyboardInterrupt:
            sweep.cancel.set()
        if sweep.cancel.is_set():
            status, state = "KILLED", "cancelled"
            with _no_interrupts():
                sweep.stop()
        elif sweep.best is None:
            status, state = "FAILED", "failed"
            first = next((o.error for o in sweep.outcomes if o.error), "no trial produced a finite score")
            error = f"all {len(sweep.outcomes)} trials failed; first error: {first}"
        with _no_interrupts():
            sweep.executor.close()
            finish_parent(client, settings, sweep.parent, sweep.outcomes, sweep.best,
                          score_metric=sweep.plan.score_metric, higher_is_better=sweep.plan.higher_is_better,
                          status=status, state=state, duration_s=time.perf_counter() - start,
                          extra_params={"model_uri": model_uri} if model_uri else None,
                          error=error or ("; ".join(warnings) if warnings else None))
    except BaseException as exc:
        with _no_interrupts():
            _abandon(sweep, exc)
        raise
    return SweepResult(
        parent_run_id=sweep.parent, experiment_id=sweep.experiment_id, experiment=spec.experiment,
        status=status, dataset=sweep.plan.dataset, model=spec.model, strategy=spec.strategy,
        score_metric=sweep.plan.score_metric, higher_is_better=sweep.plan.higher_is_better,
        total=sweep.plan.strategy.total, trials=sorted(sweep.outcomes, key=lambda o: o.number),
        best=sweep.best,
        model_uri=model_uri, registered_version=version,
        url=tracking.run_url(settings, sweep.experiment_id, sweep.parent),
        duration_s=time.perf_counter() - start, executor=sweep.executor.label, warnings=warnings)


def _best_model(sweep: _Sweep, warnings: list[str]) -> tuple[str | None, str | None]:
    """Log the best trial's model on its child run, then register it when asked."""
    best, spec = sweep.best, sweep.spec
    if best is None or not spec.log_best_model or best.run_id is None:
        return None, None
    task = sweep.task(best.number, dict(best.params))
    try:
        logged = sweep.wait(sweep.executor.submit(log_best_model, task, best.run_id, best.score, sweep.frame))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - the trials stand; say what is missing
        warnings.append(f"best model not logged: {type(exc).__name__}: {exc}")
        log.error("could not log the best model of sweep %s", sweep.parent, exc_info=True)
        return None, None
    if not logged["reproduced"]:
        warnings.append(f"the re-fitted best model scored r2 {logged['r2']:.6f}, not the trial's")
    if not spec.register:
        return str(logged["model_uri"]), None
    from mlops_local.runs import register_model

    try:
        version = register_model(sweep.client, best.run_id, spec.register, spec.alias)
    except (UserError, MlflowException) as exc:
        warnings.append(f"best model not registered as {spec.register!r}: {exc}")
        return str(logged["model_uri"]), None
    return str(logged["model_uri"]), str(version.version)


def _abandon(sweep: _Sweep, exc: BaseException) -> None:
    """The sweep itself failed: stop the workers and close every run it opened as FAILED/KILLED."""
    log.error("sweep %s failed: %s", sweep.parent, exc)
    try:
        sweep.executor.abort()
        kill_running_children(sweep.client, sweep.experiment_id, sweep.parent)
        run = sweep.client.get_run(sweep.parent)
        if run.info.status == "RUNNING":
            sweep.client.set_tag(sweep.parent, "error", f"{type(exc).__name__}: {exc}"[:5000])
            sweep.client.set_terminated(sweep.parent, "FAILED")
    except Exception:  # noqa: BLE001 - the original error matters more
        log.error("could not close sweep %s cleanly", sweep.parent, exc_info=True)

"""Hyperparameter sweeps: many tracked trainings of one model as child runs of one parent run.

    result = run_sweep(SweepSpec(DatasetSpec("co2_canada"), "random_forest", strategy="random",
                                 trials=24, ranges={"n_estimators": "20:200:log"}), settings)

Everything the user controls is validated before any run exists (UserError). Trials run on local
worker processes or a Dask cluster (:mod:`executor`), each one :func:`training.train` call
(:mod:`worker`), scheduled by :class:`loop.SweepRun`. A failed trial is a FAILED child
and the sweep goes on. Cancelling (the ``cancel`` event, or Ctrl-C in the thread running the sweep)
stops scheduling, kills what runs, marks running children KILLED and closes the parent KILLED:
nothing is left RUNNING.
"""

from __future__ import annotations

import io
import logging
import signal
import tempfile
import threading
import time
import urllib.parse
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.errors import UserError
from mlops_local.ml.promotion import decide, evaluate
from mlops_local.ml.safeload import checksum_tags
from mlops_local.ml.training import dataset_input
from mlops_local.runmeta import MODEL_ARTIFACT
from mlops_local.runs import register_model
from mlops_local.settings import Settings
from mlops_local.sweep.executor import open_executor
from mlops_local.sweep.loop import OnTrial, SweepRun
from mlops_local.sweep.plan import plan_sweep, worker_env
from mlops_local.sweep.spec import SweepResult, SweepSpec
from mlops_local.sweep.tracking import (
    create_parent,
    finish_parent,
    kill_running_children,
    render_artifacts,
)

__all__ = ["plan_sweep", "run_sweep"]

log = logging.getLogger(__name__)


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


def run_sweep(spec: SweepSpec, settings: Settings, *, client: MlflowClient | None = None,
              cancel: threading.Event | None = None, on_trial: OnTrial | None = None, metrics: Any = None,
              frame: pd.DataFrame | None = None, start_method: str | None = None) -> SweepResult:
    """Run the sweep ``spec`` and track it in MLflow; returns when it finished or was cancelled.

    ``cancel``: set it (e.g. the UI's Stop button) to stop the sweep; Ctrl-C does the same when the
    sweep runs in the main thread. ``on_trial`` is called after each trial. ``metrics`` (a
    :class:`mlops_local.metrics.sweeps.SweepMetrics`) is updated as trials end. ``frame``: an uploaded
    table (``spec.dataset.name`` is then its file name). ``start_method``: how local workers start
    (see :func:`executor.worker_context`; the CLI forks).
    """
    start = time.perf_counter()
    plan = plan_sweep(spec, frame)
    executor = None
    if not spec.dask_scheduler:  # local workers start importing now, while MLflow is set up
        executor = open_executor(plan.jobs, None, worker_env(settings), settings.http_timeout, start_method,
                                 prime_models=spec.models != "none")
    try:
        if client is None:
            client = tracking.connect(settings).client
        else:
            tracking.configure(settings)
        if spec.dask_scheduler:
            _check_reachable_from_dask(client.tracking_uri, spec.dask_scheduler)
        experiment_id = tracking.experiment_for(client, settings, spec.experiment)
        if executor is None:
            executor = open_executor(plan.jobs, spec.dask_scheduler, worker_env(settings),
                                     settings.http_timeout)
        parent = create_parent(client, experiment_id, spec, plan.space, dataset=plan.dataset,
                               total=plan.total, score_metric=plan.score_metric,
                               higher_is_better=plan.higher_is_better, executor=executor.label,
                               dataset_input=None if plan.data is None else dataset_input(plan.data))
    except BaseException:
        if executor is not None:
            executor.abort()
        raise
    sweep = SweepRun(plan, settings, client, experiment_id, parent, executor, frame,
                     cancel or threading.Event(), on_trial, metrics)
    return _finish(sweep, start)


def _check_reachable_from_dask(uri: str, scheduler: str) -> None:
    """Dask workers log their trials themselves: they need an HTTP tracking URI they can reach."""
    if not uri.startswith(("http://", "https://")):
        raise UserError(f"--dask-scheduler needs an MLflow tracking server the workers can reach over "
                        f"HTTP; the tracking URI is {uri} (start `mlops-local serve mlflow` or set "
                        "MLFLOW_TRACKING_URI)")
    loopback = ("localhost", "127.0.0.1", "::1")
    tracking_host = urllib.parse.urlsplit(uri).hostname or ""
    scheduler_host = urllib.parse.urlsplit(scheduler).hostname or ""
    if tracking_host in loopback and scheduler_host not in loopback:
        raise UserError(f"Dask workers behind {scheduler} cannot reach MLflow at {uri} (a loopback address "
                        "on their machine): set MLFLOW_TRACKING_URI to an address they can reach, e.g. "
                        "http://<this host's name>:8080, and serve MLflow on it (MLOPS_HOST)")


def _finish(sweep: SweepRun, start: float) -> SweepResult:
    """Run the trials, draw the charts, log the best model, close the parent run."""
    spec, client, settings, plan = sweep.spec, sweep.client, sweep.settings, sweep.plan
    model_uri = version = promotion = None
    warnings: list[str] = []
    status, state, error = "FINISHED", "finished", None
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-sweep-") as tmp:
            artifacts = Path(tmp) / "artifacts"
            artifacts.mkdir()
            sweep.model_dir = str(Path(tmp))  # models the local workers keep (removed with tmp)
            try:
                sweep.frame = sweep.executor.share(sweep.frame)
                sweep.loop()
                if not sweep.cancel.is_set():
                    model_uri, version, promotion = _best_model(sweep, warnings)
                    _best_dataset(sweep, warnings)
            except KeyboardInterrupt:
                sweep.cancel.set()
            with _no_interrupts():
                if sweep.cancel.is_set():
                    status, state = "KILLED", "cancelled"
                    sweep.stop()
                elif sweep.best is None:
                    status, state = "FAILED", "failed"
                    first = next((o.error for o in sweep.outcomes if o.error), "no trial produced a score")
                    error = f"all {len(sweep.outcomes)} trials failed; first error: {first}"
                render_artifacts(artifacts, sweep.outcomes, plan.score_metric, plan.higher_is_better,
                                 sweep.baseline)
                sweep.executor.close()
                sweep.flush_progress()
                finish_parent(client, settings, sweep.parent, sweep.outcomes, sweep.best, status=status,
                              state=state, duration_s=time.perf_counter() - start, artifacts_dir=artifacts,
                              extra_params={"model_uri": model_uri} if model_uri else None,
                              error=error or ("; ".join(warnings) if warnings else None))
    except BaseException as exc:
        with _no_interrupts():
            _abandon(sweep, exc)
        raise
    return SweepResult(
        parent_run_id=sweep.parent, experiment_id=sweep.experiment_id, experiment=spec.experiment,
        status=status, dataset=plan.dataset, model=spec.model, strategy=spec.strategy,
        score_metric=plan.score_metric, higher_is_better=plan.higher_is_better, total=plan.total,
        trials=sorted(sweep.outcomes, key=lambda o: o.number), best=sweep.best, model_uri=model_uri,
        registered_version=version, promotion=promotion,
        url=tracking.run_url(settings, sweep.experiment_id, sweep.parent),
        duration_s=time.perf_counter() - start, executor=sweep.executor.label, warnings=warnings,
        baseline=sweep.baseline)


def _best_model(sweep: SweepRun, warnings: list[str]) -> tuple[str | None, str | None, str | None]:
    """The best trial's model URI (models = best: uploaded now), its registered version when asked, and
    what the promotion gate did with the alias (None without one)."""
    best, spec = sweep.best, sweep.spec
    if best is None or best.run_id is None or spec.models == "none":
        return None, None, None
    uri = f"runs:/{best.run_id}/{MODEL_ARTIFACT}"  # models = all: the trial logged it
    if spec.models == "best":
        if sweep.best_archive is None:  # its worker could not keep it: say so, upload nothing
            reason = best.model_error or "its worker sent no model back"
            warnings.append(f"best model not logged: trial {best.number}'s model was not kept ({reason})")
            log.error("sweep %s: %s", sweep.parent, warnings[-1])
            return None, None, None
        try:
            _upload_model(sweep, best.run_id, sweep.best_archive)
            log.info("best trial %d's model logged on run %s", best.number, best.run_id)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the trials stand; say what is missing
            warnings.append(f"best model not logged: {type(exc).__name__}: {exc}")
            log.error("could not log the best model of sweep %s", sweep.parent, exc_info=True)
            return None, None, None
    if not spec.register:
        return uri, None, None
    promotion = None
    try:
        if spec.alias:  # the alias moves through the promotion gate, as from `promote` and the Runs page
            outcome = decide(sweep.client, sweep.settings,
                             evaluate(sweep.client, best.run_id, spec.register, spec.alias))
            if outcome.result == "refused":
                warnings.append(f"{outcome.message()} Verdict: " + "; ".join(outcome.verdict.lines()))
            version, promotion = outcome.registration, outcome.result
        else:
            version = register_model(sweep.client, best.run_id, spec.register)
    except (UserError, MlflowException) as exc:
        warnings.append(f"best model not registered as {spec.register!r}: {exc}")
        return uri, None, None
    return uri, str(version.version), promotion


def _best_dataset(sweep: SweepRun, warnings: list[str]) -> None:
    """Unless every trial logged it (models = all), the dataset input goes on the parent (at its creation)
    and on the best trial's run, which then carries what a training's run does."""
    best, data = sweep.best, sweep.plan.data
    if sweep.spec.models == "all" or best is None or best.run_id is None or data is None:
        return
    try:
        sweep.client.log_inputs(best.run_id, datasets=[dataset_input(data)])
    except MlflowException as exc:
        warnings.append(f"dataset input not logged on the best trial's run: {exc.message[:300]}")


def _upload_model(sweep: SweepRun, run_id: str, archive: bytes | str) -> None:
    """Unpack the best trial's model directory (zip bytes or file) and upload it as the run's ``model``."""
    with tempfile.TemporaryDirectory(prefix="mlops-sweep-model-") as tmp:
        with zipfile.ZipFile(io.BytesIO(archive) if isinstance(archive, bytes) else archive) as zf:
            zf.extractall(tmp)
        run = sweep.client.get_run(run_id)
        tracking.log_artifacts(sweep.client, sweep.settings, run.info.artifact_uri, Path(tmp))
        for key, value in checksum_tags(Path(tmp) / MODEL_ARTIFACT).items():  # what the loader checks
            sweep.client.set_tag(run_id, key, value)


def _abandon(sweep: SweepRun, exc: BaseException) -> None:
    """The sweep itself failed: stop the workers and close every run it opened as FAILED/KILLED."""
    log.error("sweep %s failed: %s", sweep.parent, exc)
    try:
        sweep.executor.abort()
        # A local server that went away: its store is still here, close the runs there.
        client = tracking.fallback_client(sweep.settings, sweep.client.tracking_uri) or sweep.client
        kill_running_children(client, sweep.experiment_id, sweep.parent)
        run = client.get_run(sweep.parent)
        if run.info.status == "RUNNING":
            client.set_tag(sweep.parent, "error", f"{type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(sweep.parent, "FAILED")
    except Exception:  # the original error matters more
        log.error("could not close sweep %s cleanly", sweep.parent, exc_info=True)

"""What runs on a worker (a local process or a Dask worker): one trial, or the baseline's score.

Both are plain top-level functions of picklable arguments, so a ProcessPoolExecutor and a Dask client
call them the same way. A trial is one :func:`mlops_local.ml.training.train` call (the child run, its
params, metrics and tags, FAILED on error; its model, plots and dataset input only with
``models = all``). On Dask, between steps it checks the sweep's cancel event (a ``distributed.Event``
on the scheduler): once it is set the trial stops and closes its child as KILLED (a Dask task cannot
be killed from outside; local workers are). With ``models = best`` a trial that beats the best trial
known when it was submitted sends its fitted model and its plots back (``model/`` and ``plots/`` as
a zip); the sweep keeps the best one's and uploads it at the end, so no trial uploads artifacts that
are later beaten and the best is not fitted twice. The final best always beat the best known when it
was submitted, so this is the one path: when its worker could not write the zip, the sweep says so
and logs no model.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.ml.types import TrainRequest
from mlops_local.runmeta import TAG_PARENT, TAG_TRIAL
from mlops_local.settings import Settings
from mlops_local.sweep.spec import TrialOutcome, better
from mlops_local.sweep.tracking import CANCELLED, close_child

log = logging.getLogger(__name__)

_CANCEL_STEPS = ("load", "fit", "log")  # before the child exists, right after it is created, before logging
_clients: dict[str, MlflowClient] = {}
_clients_lock = threading.Lock()


class TrialCancelled(Exception):
    """The sweep was cancelled while this trial ran."""


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs for one trial (no live objects: it is pickled to the worker)."""

    number: int
    request: TrainRequest
    settings: Settings
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    score_metric: str
    env: tuple[tuple[str, str], ...] = ()  # bounded MLflow HTTP client settings
    threads: int = 1  # BLAS/OpenMP threads per trial (trials already run in parallel)
    cancel_event: str | None = None  # Dask: the Event whose setting stops the trial at its next step
    # models = best: send this trial's model back when it beats the best trial known at submission
    # (score, number; None: no trial finished yet). Only the best's model is logged in the end.
    keep_model: bool = False
    beat: tuple[float, int] | None = None
    higher_is_better: bool = True
    model_dir: str | None = None  # local workers write kept models here (this machine's disk); None: bytes


def init_local_worker(env: tuple[tuple[str, str], ...]) -> None:
    """ProcessPoolExecutor initializer: Ctrl-C is the parent's to handle; bounded MLflow client."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _apply_env(env)
    logging.basicConfig(level=logging.WARNING)


def _apply_env(env: tuple[tuple[str, str], ...]) -> None:
    for key, value in env:
        os.environ.setdefault(key, value)


def client_for(uri: str) -> MlflowClient:
    """One MlflowClient per tracking URI per worker process."""
    with _clients_lock:
        if uri not in _clients:
            _clients[uri] = tracking.new_client(uri)  # bounds: the sweep's env, applied by _apply_env
        return _clients[uri]


def find_child(client: MlflowClient, experiment_id: str, parent_run_id: str, number: int):
    """The child run of trial ``number``, or None when it was never created."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.{TAG_TRIAL} = '{number}'"), max_results=1)
    return runs[0] if runs else None


def run_trial(task: TrialTask, frame: pd.DataFrame | None = None) -> TrialOutcome:
    """Train one trial as a child run; failures come back as a FAILED outcome, never as an exception."""
    from threadpoolctl import threadpool_limits

    from mlops_local.ml.training import train

    _apply_env(task.env)
    client = client_for(task.tracking_uri)
    params = dict(task.request.params)

    progress = None
    if task.cancel_event is not None:
        from distributed import Event

        cancel = Event(task.cancel_event)  # this Dask worker's client asks the scheduler: no MLflow request

        def progress(step: str, elapsed: float) -> None:
            if step in _CANCEL_STEPS and cancel.is_set():
                raise TrialCancelled(f"sweep {task.parent_run_id} cancelled")

    kept: list[bytes | str] = []
    not_kept: list[str] = []  # why keeping failed, for the sweep's warning should this trial win

    def keep(metrics: dict[str, float], save) -> None:  # training.ModelKeeper
        score = metrics.get(task.score_metric)
        mine = TrialOutcome(task.number, params, "FINISHED", score=score)
        rival = None if task.beat is None else TrialOutcome(task.beat[1], {}, "FINISHED", score=task.beat[0])
        if not better(mine, rival, task.higher_is_better):
            return
        try:
            with tempfile.TemporaryDirectory(prefix="mlops-sweep-") as tmp:
                save(Path(tmp))  # model/ and plots/
                kept.append(package(task, Path(tmp)))
        except Exception as exc:  # the trial stands; the sweep warns if it wins
            log.warning("could not keep the model of trial %d", task.number, exc_info=True)
            not_kept.append(f"{type(exc).__name__}: {exc}"[:500])

    try:
        with threadpool_limits(limits=max(1, task.threads)):
            result = train(task.request, task.settings, client=client, frame=frame,
                           progress=progress,
                           keep_model=keep if task.keep_model else None, experiment_id=task.experiment_id)
    except TrialCancelled:
        return TrialOutcome(task.number, params, "KILLED", run_id=_close_killed(client, task),
                            error="cancelled")
    except Exception as exc:  # noqa: BLE001 - a failed trial is a result; the sweep goes on
        error = f"{type(exc).__name__}: {exc}"
        log.info("trial %d failed: %s", task.number, error)
        # its child run (if train() created one): the sweep looks it up, as for a worker that died
        return TrialOutcome(task.number, params, "FAILED", error=error[:5000])
    return TrialOutcome(task.number, dict(result.params), "FINISHED", run_id=result.run_id,
                        metrics=dict(result.metrics), durations=dict(result.durations),
                        score=result.metrics.get(task.score_metric), model_archive=kept[0] if kept else None,
                        model_error=not_kept[0] if not_kept else None)


def package(task: TrialTask, root: Path) -> bytes | str:
    """The model directory under ``root`` as a zip: a file in ``task.model_dir`` (its path), else bytes."""
    archive = zip_dir(root)
    if task.model_dir is None:
        return archive
    path = Path(task.model_dir) / f"trial-{task.number}-{os.getpid()}-{time.monotonic_ns()}.zip"
    partial = path.with_suffix(".part")
    partial.write_bytes(archive)
    partial.replace(path)
    return str(path)


def zip_dir(root: Path) -> bytes:
    """The files under ``root`` as zip bytes (stored, not compressed: they go over a local pipe)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    return archive.getvalue()


def _close_killed(client: MlflowClient, task: TrialTask) -> str | None:
    """train() marked the child FAILED on the way out; a cancelled trial is KILLED."""
    try:
        child = find_child(client, task.experiment_id, task.parent_run_id, task.number)
        if child is None:
            return None
        close_child(client, child.info.run_id, "KILLED", CANCELLED)
        return child.info.run_id
    except MlflowException:
        log.warning("could not mark cancelled trial %d KILLED", task.number, exc_info=True)
        return None


def baseline_score(task: TrialTask, frame: pd.DataFrame | None = None) -> float | None:
    """The score of ``task``'s model with its default hyperparameters on the trials' data, split and seed
    (cross-validated like them): what a default training scores, the sweep charts' baseline. Not a run."""
    from threadpoolctl import threadpool_limits

    from mlops_local.ml import evaluation
    from mlops_local.ml.training import prepare

    request = replace(task.request, params={})
    prepared = prepare(request, frame)
    with threadpool_limits(limits=max(1, task.threads)):
        prepared.pipeline.fit(prepared.X_train, prepared.y_train)
        y_pred = np.asarray(prepared.pipeline.predict(prepared.X_test), dtype=float)
        metrics = evaluation.regression_metrics(prepared.y_test.to_numpy(), y_pred)
        if prepared.folds:
            metrics.update(evaluation.cross_validation(prepared.pipeline, prepared.X_train, prepared.y_train,
                                                       prepared.folds, int(request.seed)))
    return metrics.get(task.score_metric)


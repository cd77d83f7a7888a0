"""Log one MLflow run with its network calls overlapping the CPU work of a training.

Creating the run, logging its params and dataset happen while the model fits (a child run, which
nobody watches while it runs, sends its params with its metrics instead: one request fewer); artifacts
upload file by file, in parallel, as soon as each directory is written. On the local SQLite store (no
server in between) everything runs inline, one call at a time. Whatever happens,
:meth:`RunLogger.fail` or :meth:`RunLogger.finish` leaves the run FAILED, KILLED or FINISHED, never RUNNING;
every run carries its owner process (host, pid, start time) for the reaper if even that fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient

from mlops_local import tracking
from mlops_local.owner import owner_tags
from mlops_local.runmeta import TAG_ERROR
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

_MAX_TAG = 5000
_UPLOAD_THREADS = 4


class _Inline:
    """Executor stand-in that runs each call at once (SQLite store: one writer at a time)."""

    def submit(self, fn: Callable, *args: object) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future like a thread pool
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class RunLogger:
    """One run: open() in the background, log_* and upload_dir() queue calls, finish() or fail() closes it."""

    def __init__(self, client: MlflowClient, settings: Settings, experiment_id: str) -> None:
        self.client, self.settings, self.experiment_id = client, settings, experiment_id
        local = tracking.uses_local_store(client, settings)
        self._pool = _Inline() if local else ThreadPoolExecutor(_UPLOAD_THREADS, "mlops-log")
        self._opened: Future | None = None
        self._created: Run | None = None
        self._pending: list[Future] = []
        self._repo = None
        self._deferred: dict[str, str] = {}  # params to send with the first log_batch (or on close)

    def open(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, str],
             dataset_input: Callable[[], object] | None = None, defer_params: bool = False) -> None:
        """Create the run with its tags, then log params and the dataset input (in the background).

        ``defer_params``: send the params with the first :meth:`log_batch` instead (or when the run
        is closed, whatever happens)."""
        if defer_params:
            self._deferred = dict(params)
        self._opened = self._pool.submit(self._open, run_name, dict(tags),
                                         {} if defer_params else dict(params), dataset_input)

    def _open(self, run_name: str, tags: dict[str, str], params: dict[str, str],
              dataset_input: Callable[[], object] | None) -> Run:
        # Who holds the run open: the reaper closes it if this process dies without closing it.
        run = self.client.create_run(self.experiment_id, tags={**tags, **owner_tags()}, run_name=run_name)
        self._created = run
        self._repo = tracking.artifact_repository(self.client, self.settings, run.info.artifact_uri)
        if params:
            self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        if dataset_input is not None:
            self._log_input(run.info.run_id, dataset_input())
        return run

    def _log_input(self, run_id: str, dataset: object, attempts: int = 3) -> None:
        """log_inputs, retried: parallel trials logging the same new dataset race on its row in the
        server's database (a unique-constraint error for all but one); the retry finds it there."""
        from mlflow.exceptions import MlflowException

        for attempt in range(attempts):
            try:
                self.client.log_inputs(run_id, datasets=[dataset])
                return
            except MlflowException as exc:
                # "API request ... failed": the server is gone, not a race; retrying only delays the error.
                if attempt == attempts - 1 or str(exc.message).startswith("API request"):
                    raise
                log.info("logging the dataset input raced another run (%s); retrying", exc.message[:200])
                time.sleep(0.1 * (attempt + 1))

    @property
    def run(self) -> Run:
        """The created run (waits for its creation; raises what creation raised)."""
        if self._opened is None:
            raise RuntimeError("RunLogger.open() was not called")
        return self._opened.result()

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_batch(self, metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
                  tags: Mapping[str, str] | None = None) -> None:
        """Queue one log_batch call (with the deferred params, if any)."""
        now = int(time.time() * 1000)
        params = {**self._deferred, **(params or {})}
        self._deferred = {}
        self._pending.append(self._pool.submit(
            self.client.log_batch, self.run_id,
            [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            [Param(k, str(v)) for k, v in params.items()],
            [RunTag(k, str(v)) for k, v in (tags or {}).items()]))

    def upload_dir(self, local_dir: Path, artifact_path: str) -> None:
        """Queue the upload of every file under ``local_dir`` to ``artifact_path`` (one call per file)."""
        self.run  # noqa: B018 - the repository exists once the run does
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            parent = path.parent.relative_to(local_dir).as_posix()
            dest = artifact_path if parent == "." else f"{artifact_path}/{parent}"
            self._pending.append(self._pool.submit(self._repo.log_artifact, str(path), dest))

    def wait(self) -> None:
        """Wait for every queued call; raise the first error."""
        wait(self._pending)
        for future in self._pending:
            future.result()

    def finish(self) -> None:
        """Wait for the queued calls, then mark the run FINISHED."""
        if self._deferred:
            self.log_batch()
        self.wait()
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        """Cancel what is queued and close the run with the error as a tag (best effort): KILLED when
        interrupted (Ctrl-C, SIGTERM), else FAILED. A local server that went away is bypassed: the
        run is closed in its store directly."""
        for future in self._pending:
            future.cancel()
        if self._opened is not None:
            wait([self._opened])
        if self._created is None:  # the run was never created: nothing to close
            return
        run_id = self._created.info.run_id
        wait(self._pending, timeout=60)
        client = tracking.fallback_client(self.settings, self.client.tracking_uri) or self.client
        if self._deferred:  # a failed run still shows what it was trained with
            try:
                client.log_batch(run_id, params=[Param(k, v) for k, v in self._deferred.items()])
            except Exception as err:  # still try to close the run
                log.warning("could not log the params of run %s: %s", run_id, err, exc_info=True)
            self._deferred = {}
        interrupted = isinstance(exc, KeyboardInterrupt)
        if interrupted:
            message = "terminated (SIGTERM)" if type(exc).__name__ == "Terminated" else "interrupted"
        else:
            message = f"{type(exc).__name__}: {exc}"
        try:
            client.set_tag(run_id, TAG_ERROR, message[:_MAX_TAG])
        except Exception as err:  # still try to close the run
            log.warning("could not record the error on run %s: %s", run_id, err, exc_info=True)
        status = "KILLED" if interrupted else "FAILED"
        try:
            client.set_terminated(run_id, status)
        except Exception as err:
            log.error("could not mark run %s %s (%s); the reaper closes it once this process is gone",
                      run_id, status, err, exc_info=True)

    def close(self) -> None:
        """Release the worker threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Where trials run: local worker processes or an existing Dask distributed cluster, one interface.

Both hand back futures with ``add_done_callback`` and ``result()``; the sweep loop does not know which
it has. Local workers are spawned (never forked: the UI process has threads) and ignore Ctrl-C, which
the sweep handles; cancelling kills them at once. A Dask cluster is not ours to kill: pending tasks
are cancelled and running ones stop at their next step (they check the sweep's ``distributed.Event``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from mlops_local.errors import ServiceUnavailable, UserError

log = logging.getLogger(__name__)

_JOIN_TIMEOUT = 10.0


class TrialExecutor(Protocol):
    """What the sweep needs from a place to run trials."""

    slots: int
    label: str
    threads_per_trial: int  # BLAS/OpenMP threads each trial may use
    # None: abort() kills running trials at once (local processes, which share this machine's disk);
    # else the name of the distributed.Event that abort() sets and running trials check between steps
    cancel_event: str | None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def share(self, obj: Any) -> Any: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


def cores() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def worker_context(start_method: str | None = None) -> multiprocessing.context.BaseContext:
    """How local workers start: ``fork`` only when asked and this process runs no other thread
    (the CLI: workers then inherit its imports), else a forkserver that has preloaded the training
    stack (a process with threads, like the UI, must not fork; only its first sweep waits for the
    imports) and whose workers never re-run the parent's ``__main__`` (:mod:`preload`), else
    ``spawn`` (no forkserver: not Linux or macOS)."""
    available = multiprocessing.get_all_start_methods()
    method = start_method or "forkserver"
    if method == "fork" and threading.active_count() > 1:
        method = "forkserver"  # forking a process with threads can deadlock the child
    if method not in available:
        method = "forkserver" if "forkserver" in available else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["mlops_local.sweep.worker", "mlops_local.sweep.preload"])
    return context


class LocalExecutor:
    """``jobs`` local worker processes (default: one per core); see :func:`worker_context`."""

    def __init__(self, jobs: int | None, env: tuple[tuple[str, str], ...] = (),
                 start_method: str | None = None, prime_models: bool = True) -> None:
        from mlops_local.ml.warmup import warm_up
        from mlops_local.sweep.worker import init_local_worker

        self.slots = jobs or cores()
        self.threads_per_trial = max(1, cores() // self.slots)
        self.cancel_event = None
        context = worker_context(start_method)
        self.label = f"local processes ({self.slots}, {context.get_start_method()})"
        self._pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=context,
                                         initializer=init_local_worker, initargs=(env,))
        # The workers start now and import what trials need while the parent sets up MLflow and
        # creates the parent run.
        for _ in range(self.slots):
            self._pool.submit(warm_up, prime_models)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args)

    def share(self, obj: Any) -> Any:
        return obj  # pickled with each task; uploads are small enough

    def abort(self) -> None:
        """Drop pending tasks and kill the workers now (their child runs are closed by the sweep)."""
        # ProcessPoolExecutor has no public way to kill its workers before Python 3.14
        # (terminate_workers); its private ``_processes`` is read here and nowhere else.
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(_JOIN_TIMEOUT)
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_TIMEOUT)

    def close(self) -> None:
        """Let the idle workers exit on their own (joining them would only add latency)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class DaskExecutor:
    """Trials as tasks on an existing Dask distributed scheduler (``tcp://host:8786``)."""

    def __init__(self, address: str, jobs: int | None, timeout: float) -> None:
        try:
            from distributed import Client, Event
        except ImportError:  # pragma: no cover - dask is a dependency
            raise UserError("--dask-scheduler needs the 'distributed' package: pip install distributed") \
                from None
        if not address or "://" not in address:
            raise UserError(f"--dask-scheduler expects an address like tcp://host:8786, got {address!r}")
        try:
            self._client = Client(address, timeout=max(5.0, timeout * 2), set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ServiceUnavailable(f"Dask scheduler {address} is not reachable: {exc}") from None
        threads = sum(w.get("nthreads", 1) for w in self._client.scheduler_info()["workers"].values())
        if not threads:
            self._client.close()
            raise ServiceUnavailable(f"Dask scheduler {address} has no workers")
        self.slots = jobs or threads
        self.threads_per_trial = 1
        self.label = f"dask {address} ({threads} worker threads)"
        # One per sweep. Never cleared: a trial still running after the sweep closed stops at its next
        # step too (it costs the scheduler one small entry per cancelled sweep).
        self.cancel_event = f"mlops-sweep-cancel-{uuid.uuid4().hex}"
        self._cancel = Event(self.cancel_event, client=self._client)
        self._futures: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        future = self._client.submit(fn, *args, pure=False)
        self._futures.append(future)
        return future

    def share(self, obj: Any) -> Any:
        return obj if obj is None else self._client.scatter(obj, broadcast=True)

    def abort(self) -> None:
        """Cancel what has not started; running tasks stop themselves at their next step."""
        self._cancel.set()
        pending = [f for f in self._futures if not f.done()]
        if pending:
            self._client.cancel(pending)

    def close(self) -> None:
        self._client.close()


def open_executor(jobs: int | None, dask_scheduler: str | None, env: tuple[tuple[str, str], ...],
                  timeout: float, start_method: str | None = None,
                  prime_models: bool = True) -> TrialExecutor:
    """A Dask executor when ``dask_scheduler`` is given, else local processes."""
    if dask_scheduler:
        return DaskExecutor(dask_scheduler, jobs, timeout)
    return LocalExecutor(jobs, env, start_method, prime_models)

"""Work on a daemon thread that a page polls: a training or a sweep started from the UI.

The page script only reads the job: a rerun (another click, a page switch) never interrupts the work,
and :func:`start_once` keeps a session to one running job of a kind, so a double click cannot start a
second one. Nothing here calls Streamlit: the worker thread must never do so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

_start_lock = threading.Lock()


@dataclass(kw_only=True)
class BackgroundJob:
    """Start once; then ``running``/``done``, ``wait()`` and ``elapsed()`` (frozen once finished).

    Subclasses implement :meth:`_run` (which must not raise: errors are the job's state) and may name
    their thread with :meth:`thread_name`.
    """

    started: float = 0.0
    finished: float | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def thread_name(self) -> str:
        return "mlops-job"

    def start(self) -> Self:
        """Start the worker thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"this {type(self).__name__} was already started")
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._main, daemon=True, name=self.thread_name())
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self._run()
        finally:
            self.finished = time.perf_counter()
            self._done.set()

    def _run(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or ``timeout`` passes (False)."""
        return self._done.wait(timeout)

    def elapsed(self) -> float:
        """Seconds since the start (frozen once finished)."""
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started if self.started else 0.0


J = TypeVar("J", bound=BackgroundJob)


def start_once(holder: MutableMapping[str, Any], key: str, kind: type[J],
               factory: Callable[[], J]) -> tuple[J, bool]:
    """The running job of ``kind`` under ``holder[key]``, or a new one started; (job, started_now).

    ``holder`` is the session's state; the check and the start happen under one lock, so two clicks of
    one session can never both start a job.
    """
    with _start_lock:
        job = holder.get(key)
        if isinstance(job, kind) and job.running:
            return job, False
        job = factory()
        holder[key] = job
        job.start()
        return job, True

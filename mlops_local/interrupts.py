"""SIGTERM handled like Ctrl-C: what closes runs KILLED on Ctrl-C closes them on `kill` too (exit 143)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (so every Ctrl-C path handles it)."""


def _die_by_default(signum: int) -> None:
    """In a forked child that inherited the handler: end as the signal's default action would."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, the first SIGTERM raises :class:`Terminated` in the main thread.

    A second one is ignored, so the cleanup the first one started (closing runs) is not cut short.
    A process forked inside the block (a sweep worker) still dies of SIGTERM as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    fired: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            _die_by_default(signum)
            return
        if not fired:
            fired.append(signum)
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sigterm_sets(event: threading.Event) -> Iterator[list[int]]:
    """Within the block, SIGTERM sets ``event`` (a cancel event) instead of raising.

    Yields a list that holds the signal once one arrived (the caller's exit code depends on it).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    owner = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            _die_by_default(signum)
            return
        if not received:
            received.append(signum)
        event.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)

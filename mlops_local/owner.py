"""Which process holds an MLflow run open: tags written when the run is created, read by the reaper.

A run whose owner is gone (same host, and its pid dead, a zombie, or reused by a process that started
at another time) can never be closed by it: the reaper closes it KILLED.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import psutil

from mlops_local.runmeta import TAG_OWNER_HOST as TAG_HOST
from mlops_local.runmeta import TAG_OWNER_PID as TAG_PID
from mlops_local.runmeta import TAG_OWNER_START as TAG_START

OWNER_TAGS = (TAG_HOST, TAG_PID, TAG_START)
_START_TOLERANCE_S = 1.0  # the boot time psutil adds can move by a second; a reused pid starts later


def process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None if it does not exist or is a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def owner_tags() -> dict[str, str]:
    """The tags naming this process as a run's owner (computed per call: forked workers differ)."""
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_START: f"{process_start(pid) or 0:.2f}"}


def owner_gone(tags: Mapping[str, str], host: str | None = None) -> bool:
    """Whether the run's owner, a process of ``host`` (default this one), no longer exists.

    False when the run has no owner tags or belongs to another host: not ours to judge."""
    if tags.get(TAG_HOST) != (host or socket.gethostname()):
        return False
    try:
        pid, started = int(tags[TAG_PID]), float(tags[TAG_START])
    except (KeyError, ValueError):
        return False
    now = process_start(pid)
    return now is None or abs(now - started) > _START_TOLERANCE_S

"""Run a service's program in the foreground: in place of this process (`exec_service`), or as a child
with output passed through, signals forwarded and no orphans (`run_foreground`)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NoReturn

from mlops_local.errors import PortInUse, UserError

log = logging.getLogger(__name__)

# Below honcho's 5 s: honcho SIGKILLs our group after that, which would orphan the child's group.
STOP_GRACE_SECONDS = 4.0


def ensure_port_free(host: str, port: int, env: str) -> None:
    """Raise PortInUse (naming the port and the variable that changes it) if ``port`` is taken."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUse(host, port, env) from None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def run_foreground(
    cmd: Sequence[str], name: str, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> int:
    """Run ``cmd`` in its own process group until it exits or we get SIGTERM/SIGINT.

    On a signal the whole group gets SIGTERM, then SIGKILL after a grace period, so servers that
    fork workers (MLflow's uvicorn, Prometheus) leave nothing behind. The handlers are installed
    before the child exists and a stop that came while it was being started is acted on as soon as
    it does: a stop at any point of start-up leaves no orphan (honcho cannot reach the child's
    group, only ours).
    """
    proc: subprocess.Popen | None = None
    stopping: list[float] = []  # monotonic time of the first stop signal

    def forward(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
        if proc is not None:
            _signal_group(proc, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if stopping:  # stopped before anything was started
            log.info("%s not started: stop requested", name)
            return 0
        log.info("starting %s: %s", name, " ".join(cmd))
        proc = subprocess.Popen(
            list(cmd), env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            stdout=sys.stdout, stderr=sys.stderr,
        )
        if stopping:  # the signal came while Popen ran, before ``proc`` was set: forward it now
            _signal_group(proc, signal.SIGTERM)
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > STOP_GRACE_SECONDS:
                    log.warning("%s did not stop in %.0f s; killing it", name, STOP_GRACE_SECONDS)
                    _signal_group(proc, signal.SIGKILL)
    finally:
        if proc is not None:
            # Reap stray children of the group (a worker the server forgot to stop) while our
            # handlers still hold off a second signal.
            _signal_group(proc, signal.SIGKILL)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        log.info("%s stopped (signal received)", name)
        return 0
    log.info("%s exited with code %s", name, code)
    return code


# Dispositions Python changes at start-up that a program we exec must not inherit (subprocess restores the
# same ones for its children): a Go server with SIGPIPE ignored would not die on a closed stdout.
RESTORED_SIGNALS = ("SIGPIPE", "SIGXFSZ")


def exec_service(cmd: Sequence[str], name: str, env: Mapping[str, str], cwd: str | None = None) -> NoReturn:
    """Replace this process with ``cmd`` once our set-up is done: no wrapper left waiting on its child.

    The program keeps our PID and process group, so honcho's SIGTERM (and its SIGKILL after a grace
    period) reach it directly, as do a test's or a user's signals to the PID. There is no child, so a
    stop at any point of start-up cannot orphan one: SIGTERM and SIGINT go back to their default action
    first (a stop from then on ends this process at once), and one that came before was raised as an
    exception before we get here.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, *(getattr(signal, n) for n in RESTORED_SIGNALS
                                                  if hasattr(signal, n))):
        signal.signal(sig, signal.SIG_DFL)
    log.info("starting %s: %s", name, " ".join(cmd))
    for handler in logging.getLogger().handlers:  # exec drops whatever is still buffered
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if cwd is not None:
        os.chdir(cwd)
    try:
        os.execvpe(cmd[0], list(cmd), dict(env))
    except OSError as exc:
        raise UserError(f"cannot run {name} ({cmd[0]}): {exc.strerror}") from None


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment with unbuffered Python output plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env

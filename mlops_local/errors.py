"""Errors the user caused and can fix: shown as one clear line, never a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import urllib.parse


class UserError(Exception):
    """Bad input or configuration; the message names the problem and how to fix it (CLI exit 2)."""

    exit_code = 2


class ServiceUnavailable(UserError):
    """A service the command needs is not reachable (CLI exit 1)."""

    exit_code = 1


class PortInUse(UserError):
    """A port a service wants is taken by another process."""

    exit_code = 1

    def __init__(self, host: str, port: int, env: str) -> None:
        super().__init__(
            f"port {port} on {host} is already in use; stop the other process or set {env} "
            "to a free port"
        )
        self.host, self.port, self.env = host, port, env


class StoreCorrupt(ServiceUnavailable):
    """The MLflow SQLite store cannot be read as a database."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"database corrupt: {path} is not a readable SQLite database; move it aside "
            f"(mv {path} {path}.corrupt) to start with an empty store, or restore it from a backup "
            f"(sqlite3 {path} .recover may save its runs)"
        )


_DISK_FULL = ("database or disk is full", "no space left on device")
_READ_ONLY = ("attempt to write a readonly database", "unable to open database file", "read-only file system",
              "permission denied")
_CORRUPT = ("file is not a database", "database disk image is malformed")
_LOW_SPACE_BYTES = 16 * 1024 * 1024


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or any(cur is s for s in seen):
            continue
        seen.append(cur)
        todo += [cur.__cause__, cur.__context__]
    return seen


def _store_path(settings: object, text: str) -> str:
    """What a store error is about: the database when the message names one (the SQLite file, or the
    masked URI of MLOPS_BACKEND_STORE_URI), else MLOPS_HOME."""
    if settings is None:
        return "MLOPS_HOME"
    if "database" not in text:
        return str(settings.home)
    return str(settings.mlflow_db) if settings.store_is_sqlite else f"the database {settings.store_label}"


def known_cause(exc: BaseException, settings: object = None) -> str | None:
    """One line naming the cause of a failure the user can act on (disk full, permission denied,
    database corrupt, a local MLflow server out of disk), or None; ``settings`` names the paths."""
    chain = _chain(exc)
    for cur in chain:
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"disk full: no space left on device writing {cur.filename or _store_path(settings, '')}"
        if isinstance(cur, OSError) and cur.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            where = cur.filename or _store_path(settings, "")
            return f"permission denied on {where} ({cur.strerror}); make it writable or set MLOPS_HOME"
    text = " ".join(str(c) for c in chain).lower()
    if any(s in text for s in _DISK_FULL):
        return f"disk full: no space left on device writing {_store_path(settings, text)}"
    if any(s in text for s in _CORRUPT):
        return str(StoreCorrupt(settings.mlflow_db if settings is not None else "mlflow.db"))
    if any(s in text for s in _READ_ONLY):
        where = _store_path(settings, text)
        return f"permission denied on {where} (read-only or not yours); make it writable or set MLOPS_HOME"
    return _server_side_cause(settings, text)


def first_line(exc: BaseException) -> str:
    """``exc`` as one short line: MLflow's messages carry SQL and tracebacks after the first."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def describe_failure(exc: BaseException, settings: object = None) -> str:
    """One line for the CLI: the cause when known, else the error's first line and where details are."""
    cause = known_cause(exc, settings)
    if cause is not None:
        return cause
    label = "MLflow error" if type(exc).__module__.startswith("mlflow") else type(exc).__name__
    return f"{label}: {first_line(exc)} (run with --verbose for details)"


def _server_side_cause(settings: object, text: str) -> str | None:
    """A local MLflow server that reset the connection or answered 5xx: its disk or permissions."""
    if settings is None or not any(s in text for s in ("connection reset", "connection aborted",
                                                       "error responses", "remotedisconnected",
                                                       "broken pipe")):
        return None
    uri = urllib.parse.urlsplit(settings.effective_tracking_uri)
    local = ("127.0.0.1", "localhost", "::1", settings.host)
    if uri.hostname not in local or uri.port != settings.mlflow_port:
        return None  # another machine's server: its disk is not ours to look at
    home = settings.home
    try:
        free = shutil.disk_usage(home).free
    except OSError:
        return None
    if free < _LOW_SPACE_BYTES:
        return (f"disk full: the MLflow server's store {home} has {free // 1024} KB free; free some space "
                "and run the command again")
    if not os.access(settings.mlflow_dir, os.W_OK):
        return (f"permission denied on {settings.mlflow_dir}: the MLflow server cannot write its store; "
                "make it writable or set MLOPS_HOME")
    return None

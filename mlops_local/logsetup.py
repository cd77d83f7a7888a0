"""Logging configured once, at the entry point."""

from __future__ import annotations

import logging
import os
import sys

from mlops_local.uris import mask_credentials

# Third-party chatter at INFO drowns our own lines in honcho's output.
_NOISY = ("urllib3", "alembic", "mlflow.store", "mlflow.tracking", "distributed", "git")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MaskingFormatter(logging.Formatter):
    """The usual line, with the password of any URI in it masked (ours or a library's, tracebacks too)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))


class OneLineFormatter(MaskingFormatter):
    """Each record on one line: tracebacks are for --verbose (a failure is reported once, by the CLI)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record).replace("\n", " | ")
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def configure_logging(level: str | None = None, verbose: bool = False, mlflow_logs: bool = True) -> None:
    """Log to stderr with one format; level from MLOPS_LOG_LEVEL (default INFO); passwords in URIs masked.

    ``verbose``: DEBUG with tracebacks. Otherwise one line per record, and urllib3's retry warnings
    (a server that went away) are left out: the error they lead to is reported once.
    ``mlflow_logs``: MLflow's loggers go through ours (one line each) instead of the handler MLflow
    installs on import (a command that is a client; `serve mlflow` leaves the server its own logs).
    """
    level = "DEBUG" if verbose else (level or os.environ.get("MLOPS_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(_FORMAT) if verbose else OneLineFormatter(_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if mlflow_logs:
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        logging.getLogger("mlflow").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        # It logs every database error it then raises: the CLI reports that error once.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

"""Logging configured once, at the entry point."""

from __future__ import annotations

import logging
import os
import sys

from mlops_local.uris import mask_credentials

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MaskingFormatter(logging.Formatter):
    """The usual line, with the password of any URI in it masked (ours or a library's, tracebacks too)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))


def configure_logging(level: str | None = None) -> None:
    """Log to stderr with one format; level from MLOPS_LOG_LEVEL (default INFO)."""
    level = (level or os.environ.get("MLOPS_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=LOG_FORMAT,
        force=True,
    )
    for handler in logging.getLogger().handlers:  # a password in a URI never reaches a log line
        handler.setFormatter(MaskingFormatter(LOG_FORMAT))
    # Third-party chatter at INFO drowns our own lines in honcho's output.
    for noisy in ("urllib3", "alembic", "mlflow.store", "mlflow.tracking", "distributed", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

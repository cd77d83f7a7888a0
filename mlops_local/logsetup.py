"""Logging configured once, at the entry point."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(level: str | None = None) -> None:
    """Log to stderr with one format; level from MLOPS_LOG_LEVEL (default INFO)."""
    level = (level or os.environ.get("MLOPS_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # Third-party chatter at INFO drowns our own lines in honcho's output.
    for noisy in ("urllib3", "alembic", "mlflow.store", "mlflow.tracking", "distributed", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

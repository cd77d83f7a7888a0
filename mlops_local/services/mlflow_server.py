"""`serve mlflow`: the MLflow tracking server on the SQLite store, tuned for a desktop."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path

from mlops_local.errors import StoreCorrupt
from mlops_local.services.process import child_env, ensure_port_free, run_foreground
from mlops_local.settings import Settings


def command(settings: Settings, workers: int = 1) -> list[str]:
    """The `mlflow server` command line: SQLite store, served artifacts, one worker."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", settings.host,
        "--port", str(settings.mlflow_port),
        "--backend-store-uri", settings.backend_store_uri,
        "--artifacts-destination", str(settings.artifacts_dir),
        "--serve-artifacts",
        "--workers", str(workers),
    ]


def environment(settings: Settings, job_execution: bool = False) -> dict[str, str]:
    """Child environment: the GenAI job runner and huey consumers stay off unless asked for."""
    return child_env({
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if job_execution else "false",
        # The server must never inherit a client URI pointing at itself or elsewhere.
        "MLFLOW_TRACKING_URI": settings.backend_store_uri,
    })


def check_store(db: Path) -> None:
    """Raise StoreCorrupt (one line: how to recover) when the SQLite store exists but is no database;
    MLflow would print a traceback and exit. Reads its schema only: start-up stays fast."""
    if not db.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc):  # busy, not broken: MLflow waits for it
            return
        raise StoreCorrupt(db) from exc


def serve(settings: Settings, workers: int = 1, job_execution: bool = False) -> int:
    """Run the tracking server in the foreground until SIGTERM/SIGINT."""
    ensure_port_free(settings.host, settings.mlflow_port, "MLOPS_MLFLOW_PORT")
    check_store(settings.mlflow_db)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return run_foreground(
        command(settings, workers), "mlflow", environment(settings, job_execution),
        cwd=str(settings.mlflow_dir),
    )

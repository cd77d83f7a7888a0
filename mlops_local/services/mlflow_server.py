"""`serve mlflow`: the MLflow tracking server on the SQLite store (or MLOPS_BACKEND_STORE_URI's
PostgreSQL), tuned for a desktop.

The default (one worker, no GenAI job runner) runs MLflow's ASGI app under uvicorn in this very
process: no `mlflow server` CLI parent that only waits on its uvicorn child (about 200 MB and two
seconds of imports saved), and honcho's SIGTERM reaches uvicorn itself, which shuts down gracefully.
More workers or the job runner need MLflow's own supervisor: then `mlflow server` runs as a child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from mlops_local import backup_pg
from mlops_local.backup import sqlite_copy
from mlops_local.errors import StoreCorrupt, UserError, first_line
from mlops_local.services.process import child_env, ensure_port_free, run_foreground
from mlops_local.settings import Settings
from mlops_local.store import check_postgres
from mlops_local.uris import mask_credentials

log = logging.getLogger(__name__)

ARTIFACT_ROOT = "mlflow-artifacts:/"  # clients upload through the server (--serve-artifacts)
APP = "mlflow.server.fastapi_app:app"


def command(settings: Settings, workers: int = 1) -> list[str]:
    """The `mlflow server` command line: SQLite store, served artifacts (the multi-worker path)."""
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


def app_environment(settings: Settings) -> dict[str, str]:
    """What `mlflow server` hands its uvicorn workers (mlflow/server/__init__.py, _run_server)."""
    return {
        "_MLFLOW_SERVER_FILE_STORE": settings.backend_store_uri,
        "_MLFLOW_SERVER_REGISTRY_STORE": settings.backend_store_uri,
        "_MLFLOW_SERVER_ARTIFACT_ROOT": ARTIFACT_ROOT,
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(settings.artifacts_dir),
        "_MLFLOW_SERVER_BOOT_ID": uuid.uuid4().hex,
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
        "_MLFLOW_SGI_NAME": "uvicorn",
        "MLFLOW_ENABLE_WORKSPACES": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_TRACKING_URI": settings.backend_store_uri,
    }


def _stopped(signum: int, _frame: object) -> None:
    """SIGTERM/SIGINT outside uvicorn's own handling: before it runs, or re-raised by it once it has
    shut down gracefully. Either way this is a clean stop."""
    raise SystemExit(0)


def serve_in_process(settings: Settings) -> int:
    """MLflow's ASGI app under uvicorn in this process, until SIGTERM/SIGINT (uvicorn's handlers)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    os.environ.update(app_environment(settings))  # read by MLflow's handlers, so before importing them
    import uvicorn
    from mlflow.server.handlers import initialize_backend_stores

    # As `mlflow server` does before it starts workers: create or check the store now, so a store that
    # cannot be opened fails the start instead of every request.
    initialize_backend_stores(settings.backend_store_uri, settings.backend_store_uri, ARTIFACT_ROOT)
    log.info("starting mlflow (uvicorn, in process) on http://%s:%d, store %s", settings.host,
             settings.mlflow_port, settings.store_label)
    # Our logging (configured at the entry point) for uvicorn's lines; no access line per request: the
    # UI's sync alone would print one every few seconds into honcho's output.
    uvicorn.run(APP, host=settings.host, port=settings.mlflow_port, workers=1, log_config=None,
                access_log=False)
    log.info("mlflow stopped")
    return 0
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


def _store_revision(db: Path) -> str | None:
    """The schema revision alembic recorded in the SQLite store (None: no store, or never initialised)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() is None:
            return None
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


_REVISION_RE = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*["\']?([0-9a-f]+|None)["\']?', re.M)


def _known_revisions() -> tuple[str, list[str]]:
    """(head, every revision) of the installed MLflow's store migrations, read from the migration files'
    ``revision``/``down_revision`` lines (a few ms; alembic's own script loader costs a second or more,
    and this runs at every start)."""
    import mlflow.store

    versions = Path(mlflow.store.__file__).parent / "db_migrations" / "versions"
    parents: dict[str, str | None] = {}
    for path in versions.glob("*.py"):
        found = dict(m.groups() for m in _REVISION_RE.finditer(path.read_text()))
        if "revision" in found:
            down = found.get("down_revision")
            parents[found["revision"]] = None if down in (None, "None") else down
    children = set(parents.values())
    heads = [rev for rev in parents if rev not in children]
    if len(heads) != 1:
        raise RuntimeError(f"MLflow's migrations have {len(heads)} heads: {heads}")
    return heads[0], list(parents)


def upgrade_store(settings: Settings, clock=time.time) -> Path | None:
    """Bring an existing store to the installed MLflow's schema, after a backup; the backup's path.

    MLflow either upgrades an out-of-date store silently (when a newer table is missing) or refuses it
    ("take a backup, then run mlflow db upgrade"): this is that, done for the user, with the backup
    kept next to the store (SQLite's online backup API; ``pg_dump`` into MLOPS_HOME/mlflow for
    PostgreSQL) and one line saying so. A store written by a newer MLflow is refused: downgrading would
    lose what the newer schema holds.
    """
    db = settings.mlflow_db
    if settings.store_is_sqlite:
        if not db.is_file():
            return None
        current, where = _store_revision(db), str(db)
    else:
        current, where = backup_pg.schema_revision(settings), settings.store_label
    if current is None:
        return None  # a new store: MLflow creates its schema
    head, known = _known_revisions()
    if current == head:
        return None
    import mlflow

    if current not in known:
        raise UserError(f"the MLflow store {where} has schema {current}, written by a newer MLflow than this "
                        f"one ({mlflow.__version__}): install that MLflow, or restore a backup made with it")
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    if settings.store_is_sqlite:
        backup = db.with_name(f"{db.name}.before-upgrade-{current}-{stamp}")
        sqlite_copy(db, backup)
    else:
        backup = settings.mlflow_dir / f"mlflow.pgdump.before-upgrade-{current}-{stamp}"
        backup.parent.mkdir(parents=True, exist_ok=True)
        backup_pg.dump(settings, backup)
    import sqlalchemy
    from mlflow.store.db.utils import _upgrade_db

    engine = sqlalchemy.create_engine(settings.backend_store_uri)
    try:
        _upgrade_db(engine)
    except Exception as exc:
        cause = mask_credentials(first_line(exc))
        raise UserError(f"upgrading the MLflow store {where} from schema {current} failed ({cause}); the "
                        f"store as it was is kept at {backup}") from exc
    finally:
        engine.dispose()
    log.warning("upgraded the MLflow store's schema from %s to %s for MLflow %s; the store as it was is "
                "kept at %s", current, head, mlflow.__version__, backup)
    return backup


def check_backend(settings: Settings) -> None:
    """The configured store can be opened: the SQLite file is a database, or PostgreSQL answers."""
    if settings.store_is_sqlite:
        check_store(settings.mlflow_db)
    else:
        check_postgres(settings)


def serve(settings: Settings, workers: int = 1, job_execution: bool = False) -> int:
    """Run the tracking server in the foreground until SIGTERM/SIGINT."""
    ensure_port_free(settings.host, settings.mlflow_port, "MLOPS_MLFLOW_PORT")
    check_backend(settings)
    # Before MLflow opens it: MLflow upgrades a store that lacks a table silently, and refuses others.
    upgrade_store(settings)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    if workers == 1 and not job_execution:
        os.chdir(settings.mlflow_dir)
        return serve_in_process(settings)
    return run_foreground(
        command(settings, workers), "mlflow", environment(settings, job_execution),
        cwd=str(settings.mlflow_dir),
    )

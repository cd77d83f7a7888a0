"""`serve mlflow` on a store an older MLflow wrote (issue 16, part 5): MLflow refuses it and asks for a
backup and `mlflow db upgrade`; we take the backup, upgrade, say so in one line and serve. A store a
newer MLflow wrote is refused in one line, untouched."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.services import MLOPS, ROOT, stack_env, start_service

pytestmark = pytest.mark.integration


def _old_store(db: Path | str, steps_back: int = 5) -> str:
    """A store (a SQLite file, or a PostgreSQL URI) at the schema ``steps_back`` migrations before the
    installed MLflow's; its revision."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    from mlops_local.services.mlflow_server import _known_revisions

    head, known = _known_revisions()
    old = known[steps_back]  # walk order: head first
    if isinstance(db, Path):
        db.parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{db}" if isinstance(db, Path) else db)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, old)
    engine.dispose()
    assert old != head
    return old


def _revision(db: Path | str) -> str:
    if isinstance(db, str):  # a PostgreSQL URI
        import sqlalchemy

        engine = sqlalchemy.create_engine(db)
        try:
            with engine.connect() as con:
                return con.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar_one()
        finally:
            engine.dispose()
    with sqlite3.connect(db) as con:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _serve_after_upgrade(env: dict[str, str], logs: Path, store: Path | str, old: str, backups: str) -> Path:
    """Start `serve mlflow` on a store at schema ``old``, use it, stop it: the store is at the head
    schema, one line says so and names the backup (``backups``: its glob under MLOPS_HOME/mlflow)."""
    from mlops_local.services.mlflow_server import _known_revisions

    service = start_service("mlflow", env, logs)
    try:
        client = MlflowClient(service.url)
        run = client.create_run(client.create_experiment("after-upgrade")).info.run_id
        client.set_terminated(run, "FINISHED")
        assert client.get_run(run).info.status == "FINISHED"
    finally:
        service.stop()
    head, _ = _known_revisions()
    assert _revision(store) == head
    [backup] = (Path(env["MLOPS_HOME"]) / "mlflow").glob(backups)
    lines = [line for line in service.log().splitlines() if "upgraded the MLflow store" in line]
    assert len(lines) == 1 and old in lines[0] and head in lines[0] and str(backup) in lines[0]
    return backup


def test_serve_mlflow_backs_up_then_upgrades_an_older_store(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    db = tmp_path / "home" / "mlflow" / "mlflow.db"
    old = _old_store(db)
    backup = _serve_after_upgrade(env, tmp_path / "logs", db, old, f"mlflow.db.before-upgrade-{old}-*")
    assert _revision(backup) == old  # the store as it was


def test_serve_mlflow_refuses_a_store_from_a_newer_mlflow(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    db = tmp_path / "home" / "mlflow" / "mlflow.db"
    _old_store(db, steps_back=0)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'f00dfacef00d'")
    before = db.read_bytes()
    done = subprocess.run([*MLOPS, "serve", "mlflow"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert any("written by a newer MLflow" in line and "f00dfacef00d" in line for line in errors), done.stderr
    assert "Traceback" not in done.stderr
    assert db.read_bytes() == before and not list(db.parent.glob("*.before-upgrade-*"))


def test_serve_mlflow_backs_up_then_upgrades_an_older_postgresql_store(postgres_cluster,
                                                                      tmp_path: Path) -> None:
    from mlops_local.backup_pg import restore_dump
    from mlops_local.settings import Settings

    uri = postgres_cluster.create_database()
    old = _old_store(uri)
    env = stack_env(tmp_path / "home", MLOPS_BACKEND_STORE_URI=uri)
    backup = _serve_after_upgrade(env, tmp_path / "logs", uri, old, f"mlflow.pgdump.before-upgrade-{old}-*")
    # the dump is the store as it was: restored into an empty database, it is at the old schema
    copy = postgres_cluster.create_database()
    restore_dump(Settings.from_env(stack_env(tmp_path / "check", MLOPS_BACKEND_STORE_URI=copy)), backup)
    assert _revision(copy) == old

"""The PostgreSQL store's side of ``backup``/``restore`` and of the schema upgrade: ``pg_dump``,
``pg_restore`` and a few catalogue queries on MLOPS_BACKEND_STORE_URI.

The dump and the counts in the manifest are one point in time: a repeatable-read transaction exports
its snapshot, the counts are read in it, and ``pg_dump --snapshot`` dumps exactly that state while
the server goes on writing. The dump is PostgreSQL's custom format, uncompressed (the archive is
compressed as a whole), without owners or grants, so it restores into a database another role owns.
``pg_restore`` runs in one transaction: a failure leaves the target database as it was. The password
goes to the tools through PGPASSWORD, never on a command line other users can read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from mlops_local.errors import UserError, first_line
from mlops_local.settings import Settings
from mlops_local.uris import mask_credentials

CONNECT_TIMEOUT_S = 5
TOOL_TIMEOUT_S = 3600.0  # a dump of a very large store; the tools report their own errors sooner


def pg_tool(name: str) -> str:
    """The newest installed ``pg_dump``/``pg_restore`` (it must not be older than the server)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise UserError(f"{name} is needed to back up or restore a PostgreSQL store: install PostgreSQL's "
                        "client tools (Debian/Ubuntu: apt-get install postgresql-client)")
    return on_path


def _libpq(settings: Settings) -> tuple[str, dict[str, str]]:
    """(libpq URI without the password, environment with PGPASSWORD) for the store."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.backend_store_uri)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _connect(settings: Settings):
    import psycopg

    dsn, env = _libpq(settings)
    try:
        return psycopg.connect(dsn, password=env.get("PGPASSWORD"), connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise UserError(f"the PostgreSQL store {settings.store_label} cannot be reached: "
                        f"{first_line(exc)}") from exc


def _tables(cursor) -> set[str]:
    """The tables of the store's schema."""
    cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    return {row[0] for row in cursor.fetchall()}


def dump(settings: Settings, out: Path, count: Callable[[object, set[str]], dict] | None = None) -> dict:
    """``pg_dump`` the store into ``out`` (custom format); what ``count(cursor, tables)`` reads in the
    same snapshot (backup's counts for the manifest), or {} without it."""
    tool = pg_tool("pg_dump")
    dsn, env = _libpq(settings)
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        counts = count(cursor, _tables(cursor)) if count is not None else {}
        # The exporting transaction stays open until pg_dump has taken the snapshot over.
        done = subprocess.run([tool, "--format=custom", "--compress=0", "--no-owner", "--no-privileges",
                               f"--snapshot={snapshot}", f"--file={out}", f"--dbname={dsn}"],
                              env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
        conn.rollback()
    if done.returncode != 0:
        raise UserError(f"pg_dump of {settings.store_label} failed: "
                        f"{mask_credentials(first_line(done.stderr.strip() or done.returncode))}")
    return counts


def schema_revision(settings: Settings) -> str | None:
    """The schema revision alembic recorded in the store (None: a new, uninitialised database)."""
    with _connect(settings) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return None
        cursor.execute("SELECT version_num FROM alembic_version")
        row = cursor.fetchone()
    return row[0] if row else None


def tables_in(settings: Settings) -> int:
    """How many tables the store's database holds in its schema (0: empty, fit for a restore)."""
    with _connect(settings) as conn, conn.cursor() as cursor:
        return len(_tables(cursor))


def restore_dump(settings: Settings, dump_file: Path) -> None:
    """``pg_restore`` ``dump_file`` into the store's (empty) database in one transaction."""
    tool = pg_tool("pg_restore")
    dsn, env = _libpq(settings)
    done = subprocess.run([tool, "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
                           f"--dbname={dsn}", str(dump_file)],
                          env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    if done.returncode != 0:
        raise UserError(f"pg_restore into {settings.store_label} failed, the database is unchanged: "
                        f"{mask_credentials(first_line(done.stderr.strip() or done.returncode))}")

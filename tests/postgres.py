"""A throwaway PostgreSQL cluster for the tests (Debian's `postgresql` package: initdb + pg_ctl).

Run as an unprivileged user (PostgreSQL refuses root), on a free port, its socket in its own temporary
folder, trust authentication on 127.0.0.1 only; stopped with pg_ctl (it signals the postmaster by
the pid in its data folder) at the end of the session. Where PostgreSQL is not installed, the tests
that need it are skipped with the reason (bin/test installs it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port

STORES = ("sqlite", "postgresql")
# A test that uses the session's MLflow server runs on each store. SQLite's parameter is None, the
# value a test that is not parametrized has: the session's SQLite server and what hangs off it (the UI
# training, module fixtures) are then the same for both, never rebuilt when pytest switches between them.
on_both_stores = pytest.mark.parametrize("mlflow_env", [None, "postgresql"], ids=STORES, indirect=True)
USER = "mlops"  # the cluster's superuser (a database role, not a system account)
RUN_AS = "nobody"  # the system account the server runs as when the tests run as root
# Runs the product opened (they carry an owner) still RUNNING: (run id, name, owner pid). Same SQL on
# SQLite and PostgreSQL; conftest's end-of-session check runs it on every store.
RUNNING_QUERY = ("SELECT r.run_uuid, r.name, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                 "AND t.key = 'mlops.owner.pid' WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active'")


_COLLECTED = pytest.StashKey[dict[str, int]]()


class _CollectionOrder:
    """Notes the order of collection, before pytest groups the tests by session parameter."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        session.stash[_COLLECTED] = {item.nodeid: n for n, item in enumerate(items)}


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_CollectionOrder(), "mlops-collection-order")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """Every test on SQLite in collection order, then those on PostgreSQL. SQLite's parameter is the
    unparametrized value (None): pytest's grouping by parameter would only move those tests out of their
    module (rebuilding its fixtures); and the session's MLflow server switches to PostgreSQL once, never
    back (which would rebuild the UI training and log it twice)."""
    order = session.stash.get(_COLLECTED, {})

    def key(item: pytest.Item) -> tuple[bool, int]:
        params = getattr(getattr(item, "callspec", None), "params", {})
        # identity/str checks only: other tests' parameters include DataFrames, whose == is elementwise
        on_postgres = any(isinstance(value, str) and value == "postgresql" for value in params.values())
        return on_postgres, order.get(item.nodeid, len(order))

    items.sort(key=key)


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def missing_reason() -> str | None:
    """Why a PostgreSQL store cannot be tested here, or None."""
    if pg_bindir() is None:
        return "PostgreSQL is not installed (bin/test installs it: apt-get install postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "PostgreSQL's driver is not installed (pip install 'mlops-local[postgres]')"
    return None


@dataclass
class PostgresCluster:
    """A running cluster: ``uri(db)`` is what MLOPS_BACKEND_STORE_URI takes."""

    bindir: Path
    root: Path
    port: int
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        user = {} if self.run_as is None else {"user": self.run_as, "group": pwd.getpwnam(self.run_as).pw_gid,
                                                "extra_groups": []}
        done = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root, **user)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def init_and_start(self) -> None:
        """initdb (trust, 127.0.0.1 only) and start on ``port`` (pg_ctl waits until it accepts)."""
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        # Only TCP on loopback and the private socket folder (no host line for any other address).
        (self.data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self) -> None:
        """pg_ctl stop (fast); if it fails, SIGQUIT to the postmaster pid in postmaster.pid."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pidfile = self.data / "postmaster.pid"
            if pidfile.is_file():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)

    def create_database(self, prefix: str = "mlflow") -> str:
        """A new empty database; its URI."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.uri(name)

    def uri(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> list[list[str]]:
        """Rows of ``sql`` in ``database`` (unaligned, tab-separated)."""
        done = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
                         "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql, timeout=60)
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def running_runs(self, query: str) -> list[str]:
        """``query``'s (run id, name, owner pid) rows in every store database of the cluster, described."""
        found = []
        databases = self.psql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'mlflow%'")
        for (database,) in databases:
            try:
                rows = self.psql(database, query)
            except RuntimeError:
                continue  # a database MLflow never initialised (no runs table)
            found += [f"postgresql {database}: run {run_id} ({name}, owner pid {pid})"
                      for run_id, name, pid in rows]
        return found


# What the cluster's databases held RUNNING when it stopped: conftest's end-of-session check reads it.
LEFT_RUNNING: list[str] = []


def new_cluster(prefix: str = "mlops-pg-") -> PostgresCluster:
    """A cluster in a new temporary folder on a free port, not started yet (as ``nobody`` under root)."""
    run_as = RUN_AS if os.geteuid() == 0 else None
    # Not under pytest's basetemp: that is 0700 root's, which the server's user could not enter.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return PostgresCluster(pg_bindir(), root, free_port(), run_as)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session (skips with the reason where it cannot run)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = new_cluster()
    try:
        cluster.init_and_start()
        yield cluster
        # The stacks on it are stopped by now (they depend on this fixture): what is RUNNING stays so.
        LEFT_RUNNING.extend(cluster.running_runs(RUNNING_QUERY))
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def store_overrides(request: pytest.FixtureRequest, store: str) -> dict[str, str]:
    """Environment for a stack on ``store``: nothing for SQLite, a new database for PostgreSQL."""
    if store == "sqlite":
        return {}
    cluster = request.getfixturevalue("postgres_cluster")
    return {"MLOPS_BACKEND_STORE_URI": cluster.create_database()}

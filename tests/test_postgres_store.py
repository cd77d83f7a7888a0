"""MLflow on PostgreSQL (MLOPS_BACKEND_STORE_URI): the setting, its password never shown, clear failures,
and the server-down fallback into the same PostgreSQL store.

The scenarios shared with SQLite (CLI and UI training, a sweep, the exporter's sync and restart, Runs,
registry and aliases, Predict) run on both stores in their own modules (tests.postgres.on_both_stores).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_local import store
from mlops_local.backup import PG_DUMP, backup, read_manifest
from mlops_local.errors import UserError
from mlops_local.services.mlflow_server import check_backend
from mlops_local.settings import Settings
from tests.services import MLOPS, ROOT, free_port, stack_env, start_service

SECRET = "s3cret-pw"


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT))


def test_config_shows_the_store_with_its_password_masked(tmp_path: Path) -> None:
    uri = f"postgresql://team:{SECRET}@db.example:5432/mlflow"
    env = stack_env(tmp_path / "home", MLOPS_BACKEND_STORE_URI=uri)
    table = _cli("config", env=env)
    assert table.returncode == 0, table.stderr
    line = next(li for li in table.stdout.splitlines() if li.startswith("MLOPS_BACKEND_STORE_URI"))
    assert "postgresql://team:***@db.example:5432/mlflow" in line and "(env MLOPS_BACKEND_STORE_URI)" in line
    as_json = _cli("config", "--json", env=env)
    assert json.loads(as_json.stdout)["MLOPS_BACKEND_STORE_URI"]["value"] == \
        "postgresql://team:***@db.example:5432/mlflow"
    assert SECRET not in table.stdout + table.stderr + as_json.stdout + as_json.stderr
    default = _cli("config", "--json", env=stack_env(tmp_path / "home"))
    db = tmp_path / "home" / "mlflow" / "mlflow.db"
    assert json.loads(default.stdout)["MLOPS_BACKEND_STORE_URI"] == {"value": f"sqlite:///{db} (SQLite)",
                                                                   "source": "default"}


def test_a_store_that_is_not_postgresql_is_refused_in_one_line(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", MLOPS_BACKEND_STORE_URI=f"mysql://team:{SECRET}@db.example/mlflow")
    out = _cli("config", env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == ("mlops-local: MLOPS_BACKEND_STORE_URI='mysql://team:***@db.example/mlflow' "
                                  "is not valid: must be postgresql://user@host:port/db (unset it for the "
                                  "SQLite store in MLOPS_HOME)")


@pytest.mark.timeout(60)
def test_serve_mlflow_on_a_postgresql_that_does_not_answer_fails_fast_in_one_line(tmp_path: Path) -> None:
    uri = f"postgresql://team:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    out = _cli("serve", "mlflow", env=stack_env(tmp_path / "home", MLOPS_BACKEND_STORE_URI=uri), timeout=50)
    assert out.returncode == 1
    assert "the PostgreSQL store postgresql://team:***@127.0.0.1" in out.stderr
    assert "cannot be used" in out.stderr and "refused" in out.stderr.lower()
    assert SECRET not in out.stdout + out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_without_the_driver_serve_mlflow_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    real = store.importlib.util.find_spec
    # The driver cannot be uninstalled for one test: hide it from the check.
    monkeypatch.setattr(store.importlib.util, "find_spec",
                        lambda name: None if name == "psycopg" else real(name))
    settings = Settings.from_env(stack_env(tmp_path / "home",
                                           MLOPS_BACKEND_STORE_URI=f"postgresql://team:{SECRET}@h:5432/db"))
    with pytest.raises(UserError, match=r"pip install 'mlops-local\[postgres\]'") as caught:
        check_backend(settings)
    assert SECRET not in str(caught.value)


def test_backup_of_a_postgresql_store_that_does_not_answer_says_so_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = Settings.from_env(stack_env(
        tmp_path / "home", MLOPS_BACKEND_STORE_URI=f"postgresql://team:{SECRET}@127.0.0.1:{port}/db"))
    with pytest.raises(UserError, match=f"127.0.0.1:{port}/db.*cannot be used") as caught:
        backup(settings)
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)
    assert not settings.home.exists()  # nothing written


def _train(env: dict[str, str], experiment: str) -> subprocess.CompletedProcess:
    return _cli("train", "--dataset", "diabetes", "--model", "ridge", "--experiment", experiment, "--json",
                env=env, timeout=300)


@pytest.mark.integration
def test_a_postgresql_store_masks_its_password_and_the_fallback_writes_into_it(postgres_cluster,
                                                                               tmp_path: Path) -> None:
    # Trust authentication ignores the password: it is there to be masked.
    uri = postgres_cluster.create_database().replace("://mlops@", f"://mlops:{SECRET}@")
    env = stack_env(tmp_path / "home", MLOPS_BACKEND_STORE_URI=uri)
    server = start_service("mlflow", env, tmp_path / "logs")
    outputs = [server.log()]
    try:
        online = _train(env, "team")
        outputs += [online.stdout, online.stderr]
        assert online.returncode == 0, online.stderr
        assert not server.stop()
        offline = _train(env, "team")  # the server is down: straight into the same PostgreSQL
        outputs += [offline.stdout, offline.stderr]
        assert offline.returncode == 0, offline.stderr
        assert "writing to the local store postgresql://mlops:***@127.0.0.1" in offline.stderr
        result = json.loads(offline.stdout)
        assert result["local_store_fallback"] is True and result["tracking_uri"] == mask(uri)
        server = start_service("mlflow", env, tmp_path / "logs-again")
        client = MlflowClient(f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}")
        experiment = client.get_experiment_by_name("team")
        runs = client.search_runs([experiment.experiment_id])
        assert {r.info.run_id for r in runs} == {json.loads(online.stdout)["run_id"], result["run_id"]}
        assert all(r.info.status == "FINISHED" for r in runs)
        # the offline run's model, written beside the server's artifacts, is served through the server
        listed = client.list_artifacts(result["run_id"], "model")
        assert "model/MLmodel" in {f.path for f in listed}
        outputs.append(server.log())
    finally:
        server.stop()
    assert not any(SECRET in text for text in outputs)


def mask(uri: str) -> str:
    return uri.replace(f":{SECRET}@", ":***@")


def test_a_store_error_names_the_postgresql_store_masked_not_the_sqlite_file(tmp_path: Path) -> None:
    from mlops_local.errors import known_cause

    uri = "postgresql://mlflow:s3cret@127.0.0.1:5999/mlflow"
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_BACKEND_STORE_URI": uri})
    # psycopg's words when the database refuses a write (a read-only replica, a revoked grant)
    exc = RuntimeError("(psycopg.errors.InsufficientPrivilege) permission denied for database mlflow")
    line = known_cause(exc, settings)
    assert line is not None and "postgresql://mlflow:***@127.0.0.1:5999/mlflow" in line, line
    assert "mlflow.db" not in line and "s3cret" not in line
    sqlite = Settings.from_env({"MLOPS_HOME": str(tmp_path)})
    assert str(sqlite.mlflow_db) in known_cause(exc, sqlite)


@pytest.mark.integration
def test_backup_and_restore_of_a_postgresql_store_through_pg_dump(postgres_cluster, tmp_path: Path) -> None:
    from mlops_local.runs import register_model

    uri = postgres_cluster.create_database()
    env = stack_env(tmp_path / "home", MLOPS_BACKEND_STORE_URI=uri.replace("://mlops@", f"://mlops:{SECRET}@"))
    mlflow = start_service("mlflow", env, tmp_path / "logs")
    env["MLFLOW_TRACKING_URI"] = mlflow.url
    try:
        trained = _train(env, "team-backup")
        assert trained.returncode == 0, trained.stderr
        run_id = json.loads(trained.stdout)["run_id"]
        client = MlflowClient(mlflow.url)
        register_model(client, run_id, "team-model", "champion")
        metrics = client.get_run(run_id).data.metrics
        taken = _cli("backup", str(tmp_path / "out"), env=env, timeout=300)
        assert taken.returncode == 0, taken.stderr
        assert "1 runs" in taken.stdout and "1 aliases" in taken.stdout, taken.stdout
        assert SECRET not in taken.stdout + taken.stderr
    finally:
        mlflow.stop()
    [archive] = (tmp_path / "out").glob("mlops-backup-*.tar.gz")
    manifest = read_manifest(archive)
    assert manifest["store"] == "postgresql" and PG_DUMP in manifest["files"]
    assert "mlflow/mlflow.db" not in manifest["files"]
    assert manifest["counts"]["runs"] == 1 and manifest["counts"]["aliases"] == 1

    # refused, nothing written: into a SQLite home, and into the database that still holds the store
    for where, extra, message in (("as-sqlite", {}, "holds a PostgreSQL store"),
                                  ("over-full", {"MLOPS_BACKEND_STORE_URI": uri}, "already holds")):
        refused = _cli("restore", str(archive), env=stack_env(tmp_path / where, **extra), timeout=300)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / where).exists()

    target = postgres_cluster.create_database()
    env2 = stack_env(tmp_path / "restored", MLOPS_BACKEND_STORE_URI=target)
    done = _cli("restore", str(archive), env=env2, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 runs" in done.stdout and "1 aliases" in done.stdout, done.stdout
    assert not (tmp_path / "restored" / PG_DUMP).exists()
    assert not (tmp_path / "restored" / "mlflow" / "mlflow.db").exists()
    mlflow2 = start_service("mlflow", env2, tmp_path / "logs2")
    try:
        client2 = MlflowClient(mlflow2.url)
        run = client2.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics == metrics
        assert client2.get_model_version_by_alias("team-model", "champion").run_id == run_id
        assert {a.path for a in client2.list_artifacts(run_id)} >= {"model", "plots"}
    finally:
        mlflow2.stop()

"""`mlops-local backup` / `restore` (issue 16, part 4): a backup taken while a training runs, restored into
an empty home, brings back every run, registered model, alias and Prometheus series; a damaged or
hostile archive is refused before anything changes."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_local.backup import MANIFEST, _header, backup, read_manifest, restore
from mlops_local.errors import UserError
from mlops_local.settings import Settings
from tests.services import MLOPS, ROOT, stack_env, start_service, wait_for

RUNNING = "attributes.status = 'RUNNING'"


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _train(env: dict[str, str], *extra: str) -> str:
    done = _cli(["train", "--json", "--experiment", "backed-up", *extra], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["run_id"]


def _prometheus_points(url: str, expr: str, start: float, end: float) -> int:
    import requests

    answer = requests.get(f"{url}/api/v1/query_range", timeout=10,
                          params={"query": expr, "start": start, "end": end, "step": 1}).json()
    return sum(len(series["values"]) for series in answer["data"]["result"])


@pytest.mark.integration
def test_backup_while_a_training_runs_then_restore_brings_everything_back(tmp_path: Path) -> None:
    from mlops_local.reaper import Reaper
    from mlops_local.runs import register_model

    env = stack_env(tmp_path / "home")
    mlflow = start_service("mlflow", env, tmp_path / "logs")
    prometheus = start_service("prometheus", env, tmp_path / "logs")
    env["MLFLOW_TRACKING_URI"] = mlflow.url
    restored_services = []
    try:
        began = time.time()
        client = MlflowClient(mlflow.url)
        first = _train(env, "--model", "ridge", "--dataset", "diabetes")
        _train(env, "--model", "lasso", "--dataset", "diabetes")
        register_model(client, first, "backed-up-model", "champion")
        wait_for(lambda: _prometheus_points(prometheus.url, 'up{job="prometheus"}', began, time.time()) >= 3,
                 "Prometheus' own series scraped", 60)
        # a training under way while the backup is taken
        slow = subprocess.Popen([*MLOPS, "train", "--json", "--experiment", "backed-up", "--model",
                                 "random_forest", "--param", "n_estimators=400"],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            experiment = client.get_experiment_by_name("backed-up").experiment_id
            wait_for(lambda: bool(client.search_runs([experiment], RUNNING)), "the slow training's run", 120)
            taken = _cli(["backup", str(tmp_path / "out")], env)
            backed_up_at = time.time()
            assert taken.returncode == 0, taken.stderr
            assert "wrote " in taken.stdout and "3 runs" in taken.stdout, taken.stdout
        finally:
            out, err = slow.communicate(timeout=600)
        assert slow.returncode == 0, err
        [archive] = (tmp_path / "out").glob("mlops-backup-*.tar.gz")
        assert archive.stat().st_mode & 0o077 == 0  # holds secrets: the owner's only
        manifest = read_manifest(archive)
        assert manifest["counts"]["runs"] == 3 and manifest["counts"]["aliases"] == 1
        assert manifest["prometheus"].startswith("copied (Prometheus running")
    finally:
        mlflow.stop()
        prometheus.stop()

    # restore into an empty home and start the stack there, on other ports
    env2 = stack_env(tmp_path / "restored")
    done = _cli(["restore", str(archive)], env2)
    assert done.returncode == 0, done.stderr
    assert "3 runs" in done.stdout and "1 aliases" in done.stdout, done.stdout
    try:
        mlflow2 = start_service("mlflow", env2, tmp_path / "logs2")
        restored_services.append(mlflow2)
        prometheus2 = start_service("prometheus", env2, tmp_path / "logs2")
        restored_services.append(prometheus2)
        client2 = MlflowClient(mlflow2.url)
        experiment = client2.get_experiment_by_name("backed-up").experiment_id
        runs = client2.search_runs([experiment])
        assert len(runs) == 3
        # the training caught mid-way is RUNNING in the copy; its process is gone: the reaper (run by
        # the UI's sync) closes it KILLED, as after any crash
        caught = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
        assert len(caught) == 1
        assert Reaper(None).reap(client2, [experiment]) == caught
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert first in {r.info.run_id for r in finished}
        for run in finished:  # their models and plots came along
            assert {a.path for a in client2.list_artifacts(run.info.run_id)} >= {"model", "plots"}
        champion = client2.get_model_version_by_alias("backed-up-model", "champion")
        assert champion.run_id == first
        # Prometheus' history before the backup is there
        assert _prometheus_points(prometheus2.url, 'up{job="prometheus"}', began, backed_up_at) >= 3
    finally:
        for service in restored_services:
            service.stop()


def _small_home(root: Path) -> Settings:
    """A home with an MLflow-like store (a runs table), an artifact and Grafana's 0600 password."""
    settings = Settings.from_env(stack_env(root))
    settings.mlflow_dir.mkdir(parents=True)
    with sqlite3.connect(settings.mlflow_db) as conn:
        conn.execute("CREATE TABLE runs (run_uuid TEXT)")
        conn.executemany("INSERT INTO runs VALUES (?)", [("a",), ("b",)])
    (settings.artifacts_dir / "1" / "a").mkdir(parents=True)
    (settings.artifacts_dir / "1" / "a" / "model.skops").write_bytes(b"model bytes")
    settings.grafana_dir.mkdir()
    (settings.grafana_dir / "admin-password").write_text("s3cret")
    (settings.grafana_dir / "admin-password").chmod(0o600)
    return settings


def test_backup_and_restore_round_trip_keeps_files_and_modes(tmp_path: Path) -> None:
    settings = _small_home(tmp_path / "home")
    result = backup(settings, tmp_path / "b.tar.gz")
    assert result.counts["runs"] == 2 and result.prometheus == "not included: no Prometheus data yet"
    assert read_manifest(result.path)["store"] == "sqlite"
    target = Settings.from_env(stack_env(tmp_path / "new"))
    restored = restore(target, result.path)
    assert restored.files == result.files and restored.moved_aside is None
    assert (target.artifacts_dir / "1" / "a" / "model.skops").read_bytes() == b"model bytes"
    assert (target.grafana_dir / "admin-password").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(target.mlflow_db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_a_large_artifact_goes_through_parallel_gzip_and_gnu_tar_reads_the_archive(tmp_path: Path) -> None:
    import hashlib
    import os

    settings = _small_home(tmp_path / "home")
    big = os.urandom(9 << 20)  # over the in-memory limit and two gzip blocks
    (settings.artifacts_dir / "1" / "a" / "big.bin").write_bytes(big)
    result = backup(settings, tmp_path / "b.tar.gz")
    manifest = read_manifest(result.path)
    entry = manifest["files"]["mlflow/artifacts/1/a/big.bin"]
    assert entry == {"sha256": hashlib.sha256(big).hexdigest(), "bytes": len(big)}
    listed = subprocess.run(["tar", "-tzf", str(result.path)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {MANIFEST, *manifest["files"]}
    target = Settings.from_env(stack_env(tmp_path / "new"))
    restore(target, result.path)
    assert (target.artifacts_dir / "1" / "a" / "big.bin").read_bytes() == big
    assert not list(tmp_path.glob(".mlops-backup-*"))  # the staging folder is gone


@pytest.mark.parametrize("name", ["a", "mlflow/artifacts/1/" + "0123456789abcdef" * 2 + "/artifacts/x.json",
                                  "n" * 100, "n" * 101, "é" * 50, "é" * 51, "dir/" + "z" * 200])
@pytest.mark.parametrize(("size", "mode", "mtime"), [(0, 0o644, 0), (511, 0o600, 1_764_000_000),
                                                     (8 ** 11 - 1, 0o755, 8 ** 11 - 1), (8 ** 11, 0o640, 5)])
def test_the_fast_tar_header_is_byte_for_byte_what_tarfile_writes(name: str, size: int, mode: int,
                                                                   mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    assert _header(name, size, mode | 0o100000, mtime) == info.tobuf(tarfile.GNU_FORMAT, "utf-8",
                                                                     "surrogateescape")


def test_many_files_over_several_gzip_blocks_keep_their_checksums_and_links_are_left_out(
        tmp_path: Path) -> None:
    import hashlib
    import os

    settings = _small_home(tmp_path / "home")
    written = {}
    for i in range(600):  # ~9 MB of distinct small files: three gzip blocks, hashed on the workers
        data = os.urandom(i * 50) + str(i).encode()
        name = f"mlflow/artifacts/1/r{i % 7}/f{i:04d}.bin"
        path = settings.home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[name] = data
    (settings.artifacts_dir / "1" / "r0" / "link").symlink_to(settings.home / next(iter(written)))
    os.mkfifo(settings.artifacts_dir / "1" / "fifo")  # opening it would block the backup forever
    result = backup(settings, tmp_path / "b.tar.gz")
    files = read_manifest(result.path)["files"]
    for name, data in written.items():
        assert files[name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, name
    assert not any(name.endswith(("/link", "/fifo")) for name in files)
    listed = subprocess.run(["tar", "-tzf", str(result.path)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {MANIFEST, *files}
    target = Settings.from_env(stack_env(tmp_path / "new"))
    restore(target, result.path)
    assert all((target.home / name).read_bytes() == data for name, data in written.items())


def test_a_sqlite_backup_is_not_restored_onto_a_postgresql_store(tmp_path: Path) -> None:
    result = backup(_small_home(tmp_path / "home"), tmp_path / "b.tar.gz")
    target = Settings.from_env(stack_env(tmp_path / "new",
                                         MLOPS_BACKEND_STORE_URI="postgresql://team:pw-s3cret@127.0.0.1:1/db"))
    with pytest.raises(UserError, match="holds a SQLite store.*not supported") as caught:
        restore(target, result.path)
    assert "pw-s3cret" not in str(caught.value) and "postgresql://team:***@" in str(caught.value)
    assert not target.home.exists()


def test_restore_refuses_a_non_empty_home_and_moves_it_aside_with_force(tmp_path: Path) -> None:
    settings = _small_home(tmp_path / "home")
    archive = backup(settings, tmp_path / "b.tar.gz").path
    occupied = Settings.from_env(stack_env(tmp_path / "occupied"))
    occupied.home.mkdir()
    (occupied.home / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty"):
        restore(occupied, archive)
    assert [p.name for p in occupied.home.iterdir()] == ["keep.txt"]
    result = restore(occupied, archive, force=True)
    assert result.moved_aside is not None and (result.moved_aside / "keep.txt").read_text() == "mine"
    assert (occupied.mlflow_db).is_file() and not (occupied.home / "keep.txt").exists()


def _rewrite(archive: Path, out: Path, change: dict[str, bytes]) -> None:
    """Copy ``archive`` to ``out`` with some members' content replaced or added (manifest unchanged)."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name in change:
                data = change.pop(member.name)
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
        for name, data in change.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(("change", "message"), [
    ({"mlflow/artifacts/1/a/model.skops": b"tampered"}, "do not match their checksum"),
    ({"../outside.txt": b"escape"}, "is not a plain file inside it"),
    ({"mlflow/extra.bin": b"x"}, "is not in its manifest"),
])
def test_restore_refuses_a_damaged_or_hostile_archive_and_changes_nothing(
        tmp_path: Path, change: dict[str, bytes], message: str) -> None:
    settings = _small_home(tmp_path / "home")
    archive = backup(settings, tmp_path / "b.tar.gz").path
    bad = tmp_path / "bad.tar.gz"
    _rewrite(archive, bad, dict(change))
    target = Settings.from_env(stack_env(tmp_path / "sub" / "new"))
    with pytest.raises(UserError, match=message):
        restore(target, bad)
    assert not target.home.exists()
    assert not (tmp_path / "sub" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == []  # no staging folder left behind


def test_backup_without_a_store_says_so(tmp_path: Path) -> None:
    settings = Settings.from_env(stack_env(tmp_path / "empty"))
    with pytest.raises(UserError, match="nothing to back up: no MLflow store"):
        backup(settings)
    assert not (settings.home / "backups").exists() or not any((settings.home / "backups").iterdir())


def test_a_file_that_is_not_a_backup_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(UserError, match="is not an mlops-local backup"):
        read_manifest(junk)
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo(MANIFEST)
        data = json.dumps({"format": 99}).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match="unknown backup format 99"):
        read_manifest(tmp_path / "other.tar.gz")

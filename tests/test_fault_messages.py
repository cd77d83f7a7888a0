"""One line that names the cause, exit 1 (issue 11, section 5): disk full, read-only MLOPS_HOME, a
corrupt mlflow.db, the server's own disk full. The faults are real: tmpfs and read-only bind mounts,
garbage written into a copy of a store, a real MLflow server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.services import ROOT, stack_env, start_service

pytestmark = pytest.mark.integration

MLOPS = [sys.executable, "-m", "mlops_local.cli"]
LOCAL_STORE_NOTE = "is not running; writing to the local store"  # the notice of a server that is down


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _can_mount(tmp: Path) -> bool:
    target = tmp / "probe"
    target.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target))
    except (OSError, subprocess.CalledProcessError):
        return False
    subprocess.run(["umount", str(target)], check=True)
    return True


@pytest.fixture(scope="module")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised, empty MLflow store (``<dir>/mlflow``) that tests copy into their home."""
    root = tmp_path_factory.mktemp("template")
    if not _can_mount(root):
        pytest.skip("needs `mount` (root with CAP_SYS_ADMIN) for real tmpfs and read-only mounts")
    (root / "mlflow" / "artifacts").mkdir(parents=True)
    MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}").search_experiments()  # creates the tables
    return root / "mlflow"


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount at the end, whatever happens."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _home_on_tmpfs(tmp_path: Path, template: Path, mounts: list[Path], size: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(home))
    mounts.append(home)
    shutil.copytree(template, home / "mlflow")
    return home


def _fill(path: Path, leave_kb: int = 0) -> None:
    """Fill the file system of ``path`` until ``leave_kb`` KB are left."""
    free_kb = shutil.disk_usage(path).free // 1024
    with (path / "filler").open("wb") as fh:
        try:
            fh.write(b"\0" * max(0, free_kb - leave_kb) * 1024)
        except OSError:  # ENOSPC: full is what was asked for
            pass


def _read_only_home(tmp_path: Path, template: Path, mounts: list[Path]) -> Path:
    src, home = tmp_path / "src", tmp_path / "home"
    shutil.copytree(template, src / "mlflow")
    home.mkdir()
    _mount("--bind", str(src), str(home))
    mounts.append(home)
    _mount("-o", "remount,bind,ro", str(home))
    return home


def _cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _one_line(out: subprocess.CompletedProcess) -> str:
    """The command's only error line (exit 1, no traceback); the local-store notice aside."""
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if LOCAL_STORE_NOTE not in line]
    assert len(lines) == 1 and lines[0].startswith("mlops-local: "), out.stderr
    return lines[0]


TRAIN = ["train", "--dataset", "diabetes", "--model", "linear_regression"]


def test_disk_full_with_the_server_down(tmp_path, store_template, mounts) -> None:
    home = _home_on_tmpfs(tmp_path, store_template, mounts, "2m")
    _fill(home)
    line = _one_line(_cli(TRAIN, stack_env(home)))
    assert line.startswith("mlops-local: disk full: no space left on device writing ")
    assert str(home) in line


def test_read_only_home_with_the_server_down(tmp_path, store_template, mounts) -> None:
    home = _read_only_home(tmp_path, store_template, mounts)
    line = _one_line(_cli(TRAIN, stack_env(home)))
    assert line == (f"mlops-local: permission denied on {home / 'mlflow' / 'mlflow.db'} (read-only or not "
                    "yours); make it writable or set MLOPS_HOME")


def test_read_only_home_with_the_server_up(tmp_path, store_template, mounts) -> None:
    home = _read_only_home(tmp_path, store_template, mounts)
    env = stack_env(home)
    server = start_service("mlflow", env, tmp_path / "logs")
    try:
        line = _one_line(_cli(TRAIN, env))
    finally:
        server.stop()
    assert line == (f"mlops-local: permission denied on {home / 'mlflow'}: the MLflow server cannot write "
                    "its store; make it writable or set MLOPS_HOME")


def test_server_side_disk_full(tmp_path, store_template, mounts) -> None:
    home = _home_on_tmpfs(tmp_path, store_template, mounts, "8m")
    env = stack_env(home)
    server = start_service("mlflow", env, tmp_path / "logs")
    try:
        _fill(home, leave_kb=300)  # the run is created; its model does not fit
        line = _one_line(_cli(["train", "--dataset", "co2_canada", "--model", "random_forest", "--param",
                               "n_estimators=50"], env))
    finally:
        server.stop()
    assert line.startswith(f"mlops-local: disk full: the MLflow server's store {home} has ")
    assert "Connection reset" not in line


def _corrupt_home(tmp_path: Path, template: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(template, home / "mlflow")
    with (home / "mlflow" / "mlflow.db").open("r+b") as fh:
        fh.write(b"not a database " * 40)  # over the header and the schema
    return home


def test_corrupt_store_train_says_how_to_recover_and_details_only_with_verbose(tmp_path, store_template):
    home = _corrupt_home(tmp_path, store_template)
    db = home / "mlflow" / "mlflow.db"
    line = _one_line(_cli(TRAIN, stack_env(home)))
    assert line.startswith(f"mlops-local: database corrupt: {db} is not a readable SQLite database; move it "
                           f"aside (mv {db} {db}.corrupt)")
    verbose = _cli([*TRAIN, "--verbose"], stack_env(home))
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "file is not a database" in verbose.stderr


def test_corrupt_store_serve_mlflow_refuses_in_one_line(tmp_path, store_template):
    home = _corrupt_home(tmp_path, store_template)
    line = _one_line(_cli(["serve", "mlflow"], stack_env(home), timeout=120))
    assert line.startswith(f"mlops-local: database corrupt: {home / 'mlflow' / 'mlflow.db'} ")

"""Unbounded reads: only regular files, a size cap refused before reading, errors that never echo a file.

Reads that could exhaust the machine before the fix (/dev/zero, a FIFO, a huge sparse file) run in a
child process with a 4 GB address-space limit and a timeout, so a regression fails instead of eating
the memory of everyone on the machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_local import cli
from mlops_local.errors import UserError
from mlops_local.ml.datasets import load_dataset, read_table
from mlops_local.ml.types import DatasetSpec
from mlops_local.settings import get_settings
from tests.services import ROOT

SECRET = "S3CRET-hunter2-5f4dcc3b5aa765d61d8327deb882cf99"
CHILD_LIMIT = 4 << 30

# In a child: load each path as a dataset, print {"path", "error"} per line.
CHILD = r"""
import json, sys
from mlops_local.errors import UserError
from mlops_local.ml.datasets import load_dataset
from mlops_local.ml.types import DatasetSpec
for path in sys.argv[1:]:
    try:
        load_dataset(DatasetSpec(path, target="y"))
        error = None
    except UserError as exc:
        error = str(exc)
    print(json.dumps({"path": path, "error": error}), flush=True)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_LIMIT, CHILD_LIMIT))


def child_errors(paths: list[str], env: dict[str, str] | None = None) -> dict[str, str | None]:
    """The one-line error of loading each path, from a memory-limited child process."""
    proc = subprocess.run([sys.executable, "-c", CHILD, *paths], capture_output=True, text=True, timeout=240,
                          preexec_fn=_limit_memory, cwd=str(ROOT), env={**os.environ, **(env or {})},
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    return {r["path"]: r["error"] for r in results}


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch):
    """Set environment variables for get_settings() within one test."""
    def apply(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def test_devices_fifos_and_directories_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    sparse = tmp_path / "huge.csv"
    with open(sparse, "wb") as handle:
        handle.truncate(3 << 30)  # 3 GB that takes no disk: reading it would need 3 GB of memory
    paths = ["/dev/zero", "/dev/urandom", str(fifo), str(link), str(tmp_path), str(sparse)]
    errors = child_errors(paths)
    for path in paths[:4]:
        assert errors[path] == (f"{path} is not a regular file (a device, pipe or socket); only CSV or "
                                "Parquet files are read")
    assert errors[str(tmp_path)] == f"{tmp_path} is a directory, not a CSV or Parquet file"
    assert errors[str(sparse)] == (f"{sparse} is 3,072.0 MB, more than the 1,024 MB allowed for a dataset "
                                   "(MLOPS_MAX_DATASET_MB)")


def test_train_on_dev_zero_is_one_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "mlops_local.cli", "train", "--dataset", "/dev/zero",
                           "--target", "y"], capture_output=True, text=True, timeout=240,
                          preexec_fn=_limit_memory, cwd=str(ROOT), check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == ("mlops-local: /dev/zero is not a regular file (a device, pipe or socket); "
                                   "only CSV or Parquet files are read")


def test_size_cap_comes_from_the_setting_for_paths_and_uploads(tmp_path: Path, settings_env) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,y\n" + "".join(f"{i},{i % 7}\n" for i in range(300_000)))  # about 2.5 MB
    assert len(read_table(path)) == 300_000  # under the default cap
    settings_env(MLOPS_MAX_DATASET_MB="1")
    with pytest.raises(UserError, match=r"big.csv is 2\.\d MB, more than the 1 MB allowed .*_MAX_DATASET_MB"):
        read_table(path)
    with pytest.raises(UserError, match=r"upload.csv is 2\.\d MB, more than the 1 MB allowed"):
        read_table(path.read_bytes(), filename="upload.csv")
    # A file object (an upload) is read no further than the cap.
    with open(path, "rb") as handle, pytest.raises(UserError, match=r"upload.csv is 1\.0 MB, more than"):
        read_table(handle, filename="upload.csv")


def test_train_and_sweep_uploads_are_capped_by_the_dataset_setting_too(settings_env) -> None:
    """The Train and Sweep pages read uploads through common.read_upload: the smaller cap applies."""
    from types import SimpleNamespace

    from mlops_local.ui import common

    settings_env(MLOPS_MAX_UPLOAD_MB="200", MLOPS_MAX_DATASET_MB="1")
    upload = SimpleNamespace(name="cars.csv", size=2 * 1024 * 1024, file_id="x",
                             getvalue=lambda: pytest.fail("a file over the cap was read"))
    with pytest.raises(UserError, match=r"cars.csv is 2\.0 MB, more than the 1 MB allowed for a dataset "
                                        r"\(MLOPS_MAX_DATASET_MB\)"):
        common.read_upload(upload, "test_upload_frame")


def _secret_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Files holding SECRET where an error message could quote it: name -> (path, target)."""
    def write(name: str, text: str) -> Path:
        path = root / name
        path.write_text(text)
        return path

    shadow = f"root:{SECRET}:19000:0:99999:7:::\n" + "".join(f"u{i}:*:1:0:99999:7:::\n" for i in range(20))
    rows = "".join(f"{i},{i * 2}\n" for i in range(30))
    return {
        "one-line key file": (write("id_key", SECRET + "\n"), "y"),
        "shadow-like file": (write("shadow", shadow), "y"),
        "no target given": (write("shadow2", shadow), ""),
        "text in the target": (write("cells.csv", "a,y\n" + rows + f"31,{SECRET}\n"), "y"),
        "malformed row": (write("rows.csv", "a,y\n" + rows + f"31,{SECRET},x\n"), "y"),
    }


@pytest.mark.parametrize("case", ["one-line key file", "shadow-like file", "no target given",
                                  "text in the target", "malformed row"])
def test_errors_never_echo_the_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, target = _secret_files(tmp_path)[case]
    relative = os.path.relpath(path)
    code = cli.main(["train", "--dataset", relative, *(["--target", target] if target else [])])
    err = capsys.readouterr().err
    assert code == 2 and relative in err, err
    assert SECRET not in err and "hunter2" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_malformed_row_names_its_line_and_counts(tmp_path: Path) -> None:
    path, _ = _secret_files(tmp_path)["malformed row"]
    with pytest.raises(UserError) as err:
        read_table(path)
    assert str(err.value) == (f"{path} is not a well-formed CSV file: line 32 has 3 fields where the header "
                              "has 2")


def test_column_names_of_a_real_table_are_still_listed(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("alpha,beta,gamma\n" + "".join(f"{i},{i},{i}\n" for i in range(20)))
    with pytest.raises(UserError, match=r"target column 'y' is not in .*; columns: alpha, beta, gamma$"):
        load_dataset(DatasetSpec(str(path), target="y"))


def test_predict_upload_is_capped_by_the_dataset_setting(ui_env: dict[str, str], ui_trained_run,
                                                         settings_env) -> None:
    from tests.apptest import open_app

    settings_env(MLOPS_MAX_DATASET_MB="1", MLOPS_MAX_UPLOAD_MB="200")
    at = open_app("predict")
    at.text_input(key="predict_ref").set_value(ui_trained_run.run_id).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.file_uploader(key="predict_upload").upload("cars.csv", b"a,b\n" + b"1,2\n" * 300_000, "text/csv")
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "Cannot predict on cars.csv: cars.csv is 1.1 MB, more than the 1 MB allowed for a dataset "
        "(MLOPS_MAX_DATASET_MB)"]

"""`mlops-local train`: table and --json output, exit code 2 and one clean line for every bad input,
server down -> local store, unreachable server -> exit 1 within seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_local import cli
from mlops_local.settings import get_settings
from tests.postgres import on_both_stores
from tests.services import ROOT, apply_stack_env, free_port, stack_env
from tests.test_datasets import BAD_CASES, bad_files, french_csv

pytestmark = pytest.mark.integration

MLOPS = [sys.executable, "-m", "mlops_local.cli"]


@pytest.fixture
def cli_env(mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment points at the session's MLflow server; settings re-read."""
    apply_stack_env(monkeypatch, mlflow_env)
    yield mlflow_env
    get_settings.cache_clear()


def _runs(env: dict[str, str], experiment: str) -> list:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@on_both_stores
def test_json_output_is_one_object_with_the_agreed_fields(cli_env, capsys):
    code = cli.main(["train", "--dataset", "friedman1", "--dataset-option", "n_samples=120", "--model",
                     "random_forest", "--param", "n_estimators=8", "--param", "max_depth=4", "--cv", "3",
                     "--experiment", "cli-json", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)  # the whole of stdout is one JSON object
    assert {"run_id", "experiment_id", "dataset", "model", "metrics", "durations", "model_uri"} <= set(result)
    assert (result["dataset"], result["model"]) == ("friedman1", "random_forest")
    assert {"r2", "rmse", "mae", "cv_r2_mean"} <= set(result["metrics"])
    assert {"fit_s", "total_s"} <= set(result["durations"])
    assert result["model_uri"] == f"runs:/{result['run_id']}/model"
    assert result["local_store_fallback"] is False
    run = MlflowClient(cli_env["MLFLOW_TRACKING_URI"]).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["source"] == "cli"
    assert run.data.params["n_estimators"] == "8" and run.data.params["max_depth"] == "4"


def test_default_output_is_a_short_table(cli_env, capsys, tmp_path):
    path = french_csv(tmp_path / "emissions.csv", rows=40)
    code = cli.main(["train", "--dataset", str(path), "--target", "Émissions CO2 (g/km)", "--features",
                     "Cylindrée (L), Catégorie", "--model", "ridge", "--experiment", "cli-table"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert 8 <= len(lines) <= 14
    labels = [line.split()[0] for line in lines]
    assert labels[:3] == ["run", "dataset", "model"] and {"r2", "rmse", "mae"} <= set(labels)
    assert "emissions.csv" in out and "runs:/" in out
    [run] = _runs(cli_env, "cli-table")
    assert run.data.params["features"] == "Cylindrée (L), Catégorie"


BAD_ARGS = {
    "unknown_model": (["--dataset", "diabetes", "--model", "xgboost"], "unknown model 'xgboost'"),
    "param_wrong_type": (["--dataset", "diabetes", "--param", "n_estimators=lots"], "'n_estimators'"),
    "param_out_of_range": (["--dataset", "diabetes", "--param", "n_estimators=0"], "between 1 and 2000"),
    "param_unknown": (["--dataset", "diabetes", "--param", "trees=3"], "unknown parameter 'trees'"),
    "param_malformed": (["--dataset", "diabetes", "--param", "n_estimators"], "NAME=VALUE"),
    "test_size_zero": (["--dataset", "diabetes", "--test-size", "0"], "between 0 and 1"),
    "test_size_above_one": (["--dataset", "diabetes", "--test-size", "1.5"], "between 0 and 1"),
    "cv_one": (["--dataset", "diabetes", "--cv", "1"], "cv folds"),
    "unknown_dataset": (["--dataset", "iris"], "neither a built-in"),
    "bad_dataset_option": (["--dataset", "friedman1", "--dataset-option", "n_samples=2"], "'n_samples'"),
}


def _assert_refused(code: int, err: str, fragment: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("mlops-local: ")]
    assert len(lines) == 1 and fragment in lines[0], err


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments_exit_2_with_one_clear_line(case, cli_env, capsys):
    args, fragment = BAD_ARGS[case]
    code = cli.main(["train", *args, "--experiment", "cli-bad"])
    captured = capsys.readouterr()
    _assert_refused(code, captured.err, fragment)
    assert captured.out == ""
    assert _runs(cli_env, "cli-bad") == []


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_exit_2_with_one_clear_line(case, cli_env, capsys, tmp_path):
    path, target, fragment = bad_files(tmp_path)[case]
    code = cli.main(["train", "--dataset", str(path), "--target", target, "--model", "ridge",
                     "--experiment", "cli-bad"])
    _assert_refused(code, capsys.readouterr().err, fragment)
    assert _runs(cli_env, "cli-bad") == []


def test_test_size_that_is_not_a_number_is_an_argparse_error(cli_env, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--test-size", "half"])
    assert exit_.value.code == 2 and "invalid float value: 'half'" in capsys.readouterr().err


def _run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT))


@on_both_stores
def test_subprocess_json_stdout_is_clean(mlflow_env):
    proc = _run(["train", "--dataset", "diabetes", "--model", "ridge", "--experiment", "cli-sub", "--json"],
                mlflow_env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "ridge"  # nothing else (no MLflow run links) on stdout


def test_subprocess_bad_file_exits_2_without_traceback(mlflow_env, tmp_path):
    path, target, fragment = bad_files(tmp_path)["binary"]
    proc = _run(["train", "--dataset", str(path), "--target", target], mlflow_env)
    _assert_refused(proc.returncode, proc.stderr, fragment)


def test_server_down_says_so_and_writes_to_the_local_store(tmp_path):
    env = stack_env(tmp_path / "home")  # nothing listens on MLOPS_MLFLOW_PORT
    proc = _run(["train", "--dataset", "diabetes", "--model", "linear_regression", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    assert "is not running; writing to the local store" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["local_store_fallback"] is True
    db = Path(env["MLOPS_HOME"]) / "mlflow" / "mlflow.db"
    assert result["tracking_uri"] == f"sqlite:///{db}"
    run = MlflowClient(result["tracking_uri"]).get_run(result["run_id"])
    assert run.info.status == "FINISHED"


@pytest.mark.timeout(90)  # interpreter start included; the MLflow part itself gives up in about a second
def test_unreachable_configured_server_exits_1_quickly(tmp_path):
    env = stack_env(tmp_path / "home", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    proc = _run(["train", "--dataset", "diabetes", "--model", "ridge"], env, timeout=80)
    assert proc.returncode == 1
    assert "is not reachable" in proc.stderr and "Traceback" not in proc.stderr
    assert not (Path(env["MLOPS_HOME"]) / "mlflow" / "mlflow.db").exists()

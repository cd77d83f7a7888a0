"""A swapped model artifact must never run code: the real attacks, logged to a real MLflow server.

Each attack is first shown to work with MLflow's own loader (in a child process), then opened on the
Predict page, which must refuse it in one line without running anything.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow.artifacts
import pytest
import skops.io
import yaml
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mlops_local.ml import predict
from mlops_local.ml.modelio import MODEL_FILE, skops_blob
from mlops_local.ml.safeload import TRUSTED_TYPES, ModelRefused, derive_trusted_types, file_sha256, load_local
from mlops_local.ml.types import TrainResult
from mlops_local.runmeta import TAG_MODEL_SHA256
from tests.apptest import open_app


class RunsCommand:
    """What an attacker pickles: unpickling it calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


@pytest.fixture
def client(mlflow_env: dict[str, str]) -> MlflowClient:
    return MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])


@pytest.fixture
def good_dir(client: MlflowClient, ui_trained_run: TrainResult, tmp_path: Path) -> Path:
    """A copy of a genuine model directory logged by mlops-local."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=ui_trained_run.model_uri,
                                                    dst_path=str(tmp_path / "download"),
                                                    tracking_uri=client.tracking_uri))


def edit_mlmodel(model_dir: Path, change) -> None:
    path = model_dir / "MLmodel"
    meta = yaml.safe_load(path.read_text())
    change(meta["flavors"])
    path.write_text(yaml.safe_dump(meta))


def log_new_run(client: MlflowClient, model_dir: Path, checksum: str | None) -> str:
    """What anyone who reaches MLflow's REST API can do: a new FINISHED run holding ``model_dir``."""
    experiment = client.get_experiment_by_name("ui-tests").experiment_id
    run_id = client.create_run(experiment, run_name="swapped-model").info.run_id
    client.log_artifacts(run_id, str(model_dir), "model")
    if checksum is not None:
        client.set_tag(run_id, TAG_MODEL_SHA256, checksum)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def mlflow_loads(model_dir: Path) -> subprocess.CompletedProcess:
    """MLflow's own pyfunc loader on ``model_dir``, in a child process (prints the raw model's steps)."""
    code = ("import sys, mlflow.pyfunc; m = mlflow.pyfunc.load_model(sys.argv[1]); "
            "print(repr(m.get_raw_model()))")
    return subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True,
                          timeout=300, check=False)


def open_on_predict(run_id: str):
    at = open_app("predict")
    at.text_input(key="predict_ref").set_value(run_id).run()
    assert not at.exception, at.exception
    return at


def refusal(at) -> str:
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("model refused: "), errors
    assert "\n" not in errors[0]
    assert "predict_submit" not in [b.key for b in at.button]  # no form for a refused model
    return errors[0]


def test_pickle_swapped_in_runs_nothing(ui_env: dict[str, str], client: MlflowClient, good_dir: Path,
                                        tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (good_dir / MODEL_FILE).unlink()
    (good_dir / "model.pkl").write_bytes(pickle.dumps(RunsCommand(f"touch {marker}")))

    def to_pickle(flavors: dict) -> None:
        flavors["sklearn"].update(serialization_format="cloudpickle", pickled_model="model.pkl")
        flavors["sklearn"].pop("skops_trusted_types", None)
        flavors["python_function"]["model_path"] = "model.pkl"

    edit_mlmodel(good_dir, to_pickle)
    mlflow_loads(good_dir)
    assert marker.exists(), "the attack artifact does not work: the test would prove nothing"
    marker.unlink()

    # The attacker can tag its own run with a matching checksum: that must not help.
    run_id = log_new_run(client, good_dir, file_sha256(good_dir / "model.pkl"))
    at = open_on_predict(run_id)
    message = refusal(at)
    assert "cloudpickle" in message
    assert not marker.exists(), "the pickle ran inside the UI process"


def test_skops_trusting_posix_system_in_its_mlmodel_is_refused(ui_env: dict[str, str], client: MlflowClient,
                                                                good_dir: Path) -> None:
    genuine = skops.io.load(good_dir / MODEL_FILE, trusted=list(TRUSTED_TYPES))
    hostile = Pipeline([("run", FunctionTransformer(func=os.system)),
                        ("model", genuine.named_steps["model"])])
    blob, needed = skops_blob(hostile)
    assert "posix.system" in needed
    (good_dir / MODEL_FILE).write_bytes(blob)
    edit_mlmodel(good_dir, lambda flavors: flavors["sklearn"].update(skops_trusted_types=needed))
    loaded = mlflow_loads(good_dir)
    assert loaded.returncode == 0 and "system" in loaded.stdout, loaded.stderr[-2000:]  # MLflow trusts it

    run_id = log_new_run(client, good_dir, file_sha256(good_dir / MODEL_FILE))
    message = refusal(open_on_predict(run_id))
    assert "posix.system" in message and "allowlist" in message


def test_model_file_changed_after_logging_is_refused(ui_env: dict[str, str], client: MlflowClient,
                                                     good_dir: Path, tmp_path: Path) -> None:
    run_id = log_new_run(client, good_dir, file_sha256(good_dir / MODEL_FILE))  # logged as training does
    assert predict.load_model(f"runs:/{run_id}/model", client) is not None
    pipeline = skops.io.load(good_dir / MODEL_FILE, trusted=list(TRUSTED_TYPES))
    forest = pipeline.named_steps["model"]
    forest.estimators_, forest.n_estimators = forest.estimators_[:1], 1  # allowlisted, only different
    swapped = tmp_path / "swap" / MODEL_FILE
    swapped.parent.mkdir()
    swapped.write_bytes(skops_blob(pipeline)[0])
    client.log_artifact(run_id, str(swapped), "model")  # overwrite the logged file through the REST API

    message = refusal(open_on_predict(run_id))
    assert "does not match the checksum recorded on its run" in message
    with pytest.raises(ModelRefused, match="does not match the checksum"):
        predict.load_model(f"runs:/{run_id}/model", client)


def test_run_without_checksum_is_refused_with_the_way_out(client: MlflowClient, good_dir: Path) -> None:
    run_id = log_new_run(client, good_dir, None)
    with pytest.raises(ModelRefused, match="no recorded model checksum.*retrain it"):
        predict.load_model(f"runs:/{run_id}/model", client)


def test_genuine_model_records_its_checksum_and_loads(client: MlflowClient, ui_trained_run: TrainResult,
                                                      good_dir: Path) -> None:
    tags = client.get_run(ui_trained_run.run_id).data.tags
    assert tags[TAG_MODEL_SHA256] == file_sha256(good_dir / MODEL_FILE)
    model = predict.load_model(ui_trained_run.model_uri, client)
    assert predict.input_fields(model)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda f: f["python_function"].update(loader_module="mlflow.pyfunc.model"), "python_function loader"),
    (lambda f: f["python_function"].update(model_path="python_model.pkl"), "python_function flavour points"),
    (lambda f: f["sklearn"].update(serialization_format="pickle"), "serialization format 'pickle'"),
    (lambda f: f["sklearn"].update(pickled_model="../model.skops"), "sklearn flavour points"),
    (lambda f: f.update(keras={"data": "x"}), "only scikit-learn models"),
])
def test_mlmodel_pointing_anywhere_else_is_refused(good_dir: Path, change, reason: str) -> None:
    shutil.copy(good_dir / MODEL_FILE, good_dir / "python_model.pkl")
    checksum = file_sha256(good_dir / MODEL_FILE)
    assert load_local(good_dir, checksum) is not None
    edit_mlmodel(good_dir, change)
    with pytest.raises(ModelRefused, match=reason):
        load_local(good_dir, checksum)


def test_allowlist_is_what_the_catalog_needs() -> None:
    """The pinned allowlist equals what the catalog's pipelines need: a new estimator, preprocessing step
    or scikit-learn release that changes it fails here, not at a user's first load."""
    assert set(TRUSTED_TYPES) == derive_trusted_types()

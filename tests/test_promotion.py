"""The promotion gate from the command line, against the real MLflow server: real trainings on the same
dataset, the verdict printed with both scores, the alias moved only for a winner (or --force), a verdict
run for every decision, and models loaded by the safe loader only."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow.artifacts
import pytest
from mlflow import MlflowClient

from mlops_local import cli
from mlops_local.errors import UserError
from mlops_local.metrics.promotions import PromotionMetrics
from mlops_local.ml import promotion
from mlops_local.ml.modelio import MODEL_FILE
from mlops_local.ml.safeload import file_sha256
from mlops_local.ml.training import train
from mlops_local.ml.types import DatasetSpec, TrainRequest, TrainResult
from mlops_local.settings import Settings, get_settings
from tests.services import apply_stack_env
from tests.test_model_safety import RunsCommand, edit_mlmodel

pytestmark = pytest.mark.integration
EXPERIMENT = "promotion-tests"
REFUSED = 3


@pytest.fixture
def cli_env(mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment points at the session's MLflow server; settings re-read."""
    apply_stack_env(monkeypatch, mlflow_env)
    yield mlflow_env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def client(mlflow_env: dict[str, str]) -> MlflowClient:
    return MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])


def _ridge(env: dict[str, str], alpha: float) -> TrainResult:
    request = TrainRequest(DatasetSpec("diabetes"), "ridge", params={"alpha": alpha}, experiment=EXPERIMENT,
                           log_plots=False)
    return train(request, Settings.from_env(env))


@pytest.fixture(scope="module")
def good(mlflow_env: dict[str, str]) -> TrainResult:
    """Ridge on diabetes, lightly regularised: R² about 0.45 on its test split."""
    return _ridge(mlflow_env, 1.0)


@pytest.fixture(scope="module")
def bad(mlflow_env: dict[str, str]) -> TrainResult:
    """Ridge on diabetes, regularised into a near-constant: R² about 0 on the same split."""
    return _ridge(mlflow_env, 1e5)


def promote(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(["promote", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verdict_runs(client: MlflowClient, name: str) -> list:
    """The verdict runs about registered model ``name``, oldest first."""
    experiment = client.get_experiment_by_name(promotion.PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"params.name = '{name}'",
                              order_by=["attributes.start_time ASC"])


def champion_run(client: MlflowClient, name: str) -> str:
    return client.get_model_version_by_alias(name, "champion").run_id


def test_no_champion_then_better_moves_then_worse_is_refused(cli_env, capsys, client, good, bad) -> None:
    name = "promo-cli"
    assert good.metrics["r2"] > bad.metrics["r2"] + 0.1  # the premise of the test

    code, out, _ = promote(capsys, bad.run_id, "--name", name)
    assert code == 0, out
    assert "no champion yet: the candidate wins" in out
    assert champion_run(client, name) == bad.run_id

    # Both are scored on the candidate's rebuilt test split: the same rows each was evaluated on in training.
    code, out, _ = promote(capsys, good.run_id, "--name", name)
    assert code == 0, out
    assert f"{good.metrics['r2']:.4f}" in out and f"{bad.metrics['r2']:.4f}" in out
    assert f"margin {good.metrics['r2'] - bad.metrics['r2']:+.4f}" in out
    n_test = client.get_run(good.run_id).data.params["n_test"]  # what training held out
    assert f"r2 on {n_test} held-out rows (test split of diabetes, seed 42, test size 0.2)" in out
    assert "@champion moved from version 1 to version 2" in out
    assert champion_run(client, name) == good.run_id

    code, out, err = promote(capsys, bad.run_id, "--name", name)
    assert code == REFUSED, (out, err)
    assert f"candidate run {bad.run_id[:8]}: {bad.metrics['r2']:.4f}" in out
    assert f"champion {name}@champion (version 2): {good.metrics['r2']:.4f}" in out
    assert "the gate refuses" in out and "stays on version 2" in out
    assert champion_run(client, name) == good.run_id

    verdicts = verdict_runs(client, name)
    assert [v.data.params["result"] for v in verdicts] == ["promoted", "promoted", "refused"]
    assert all(v.info.status == "FINISHED" and v.data.params["forced"] == "false" for v in verdicts)
    last = verdicts[-1]
    assert last.data.params["candidate_run_id"] == bad.run_id and last.data.params["champion_version"] == "2"
    assert last.data.metrics["candidate_score"] == pytest.approx(bad.metrics["r2"])
    assert last.data.metrics["champion_score"] == pytest.approx(good.metrics["r2"])
    assert last.data.metrics["margin"] == pytest.approx(bad.metrics["r2"] - good.metrics["r2"])
    assert last.data.metrics["rows"] == int(n_test)
    assert "champion_score" not in verdicts[0].data.metrics  # there was none to score
    # The refusal is tagged on the candidate's version (it was version 1 already: no new version).
    tags = client.get_model_version(name, "1").tags
    assert tags["mlops.promotion.result"] == "refused"
    assert tags["mlops.promotion.verdict_run_id"] == last.info.run_id
    assert len(client.search_model_versions(f"name = '{name}'")) == 2


def test_force_moves_the_alias_and_is_recorded(cli_env, capsys, client, good, bad) -> None:
    name = "promo-force"
    assert promote(capsys, good.run_id, "--name", name)[0] == 0
    code, out, _ = promote(capsys, bad.run_id, "--name", name, "--force")
    assert code == 0, out
    assert "Forced past the gate" in out and "the gate refuses" in out  # the verdict stays what it was
    assert champion_run(client, name) == bad.run_id
    forced = verdict_runs(client, name)[-1]
    assert forced.data.params["result"] == "forced" and forced.data.params["forced"] == "true"
    version = client.get_model_version_by_alias(name, "champion")
    assert version.tags["mlops.promotion.forced"] == "true"


def test_margin_and_lower_is_better_metrics(cli_env, capsys, client, good, bad) -> None:
    name = "promo-margin"
    assert promote(capsys, bad.run_id, "--name", name, "--metric", "rmse")[0] == 0
    gain = bad.metrics["rmse"] - good.metrics["rmse"]  # rmse: lower is better, so the margin is positive
    assert gain > 0
    code, out, _ = promote(capsys, good.run_id, "--name", name, "--metric", "rmse",
                           "--min-improvement", str(gain * 1.5))
    assert code == REFUSED, out
    assert f"margin {gain:+.4f}" in out and f"{good.metrics['rmse']:.4f}" in out
    assert champion_run(client, name) == bad.run_id
    code, out, _ = promote(capsys, good.run_id, "--name", name, "--metric", "mae",
                           "--min-improvement", str((bad.metrics["mae"] - good.metrics["mae"]) * 0.5))
    assert code == 0, out
    assert champion_run(client, name) == good.run_id


def test_explicit_dataset_scores_every_row(cli_env, capsys, client, good, bad) -> None:
    name = "promo-dataset"
    assert promote(capsys, bad.run_id, "--name", name)[0] == 0
    code, out, _ = promote(capsys, good.run_id, "--name", name, "--dataset", "diabetes")
    assert code == 0, out
    assert "on 442 held-out rows (every row of diabetes)" in out


def test_incompatible_features_are_refused_naming_the_columns(cli_env, capsys, client, good,
                                                               ui_trained_run: TrainResult) -> None:
    name = "promo-features"
    assert promote(capsys, good.run_id, "--name", name)[0] == 0
    code, out, _ = promote(capsys, ui_trained_run.run_id, "--name", name)  # a co2_canada forest
    assert code == REFUSED, out
    assert "the feature sets are incompatible" in out
    assert "takes column(s) age, sex, bmi" in out  # the diabetes champion's columns the co2 rows lack
    assert champion_run(client, name) == good.run_id
    assert verdict_runs(client, name)[-1].data.params["result"] == "refused"


@pytest.mark.parametrize(("args", "message"), [
    (["--min-improvement", "-1"], "min improvement must be a finite number of 0 or more, got '-1'"),
    (["--min-improvement", "nan"], "min improvement must be a finite number of 0 or more, got 'nan'"),
    (["--alias", "v2"], "alias 'v2' is reserved"),
    (["--dataset", "no-such-file.csv"], "no-such-file.csv"),
])
def test_bad_input_is_one_line(cli_env, capsys, client, good, args: list[str], message: str) -> None:
    code, out, err = promote(capsys, good.run_id, "--name", "promo-bad-input", *args)
    assert code == 2 and not out.strip()
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not client.search_model_versions("name = 'promo-bad-input'")


def test_unknown_metric_lists_the_choices(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["promote", "0" * 32, "--name", "x", "--metric", "accuracy"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'accuracy' (choose from 'r2', 'rmse', 'mae')" in capsys.readouterr().err


def test_a_file_dataset_is_rebuilt_only_while_it_is_unchanged(cli_env, capsys, client, good,
                                                              tmp_path: Path) -> None:
    """A run trained on a file: its test split is rebuilt from the file while it holds the same rows."""
    from sklearn.datasets import load_diabetes

    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(csv, index=False)
    on_file = train(TrainRequest(DatasetSpec(str(csv), target="target"), "ridge", params={"alpha": 1.0},
                                 experiment=EXPERIMENT, log_plots=False), get_settings())
    name = "promo-file"
    assert promote(capsys, good.run_id, "--name", name)[0] == 0
    code, out, _ = promote(capsys, on_file.run_id, "--name", name)
    assert "test split of diabetes.csv, seed 42, test size 0.2" in out
    # the same rows as in training, so the same score
    assert f"candidate run {on_file.run_id[:8]}: {on_file.metrics['r2']:.4f}" in out
    assert code in (0, REFUSED)

    csv.write_text(csv.read_text().replace("\n59.0,", "\n58.0,", 1))  # one age changed: not the same rows
    code, out, _ = promote(capsys, on_file.run_id, "--name", name, "--alias", "next")
    assert code == 0 and "no champion yet" in out  # nothing to compare with: the recorded score is shown
    assert f"{on_file.metrics['r2']:.4f}" in out and "as recorded at training" in out
    code, out, _ = promote(capsys, on_file.run_id, "--name", name)  # the champion is `good`
    assert code == REFUSED
    assert "diabetes.csv changed since run" in out and "--dataset FILE" in out
    csv.unlink()
    code, out, _ = promote(capsys, on_file.run_id, "--name", name)
    assert code == REFUSED and "which is not on this machine" in out
    code, out, _ = promote(capsys, on_file.run_id, "--name", name, "--dataset", "diabetes")
    assert "on 442 held-out rows (every row of diabetes)" in out and code in (0, REFUSED)
    assert f"champion {name}@champion (version 1): " in out


def test_stale_verdict_is_refused(cli_env, client, good, bad) -> None:
    settings = get_settings()
    name = "promo-stale"
    first = promotion.evaluate(client, bad.run_id, name)
    verdict = promotion.evaluate(client, good.run_id, name)  # made while there is no champion
    promotion.decide(client, settings, first)  # then someone else promotes
    with pytest.raises(UserError, match="moved to version 1 since this verdict was made"):
        promotion.decide(client, settings, verdict)
    assert champion_run(client, name) == bad.run_id


# -- the safe loader only -------------------------------------------------------------------------------

def _copy_model(client: MlflowClient, result: TrainResult, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri, dst_path=str(dst),
                                                    tracking_uri=client.tracking_uri))


def _log_run(client: MlflowClient, model_dir: Path, source: TrainResult, checksum: str) -> str:
    """A FINISHED run holding ``model_dir`` with the source run's params (anyone with the REST API can)."""
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    run_id = client.create_run(experiment, run_name="swapped").info.run_id
    for key, value in client.get_run(source.run_id).data.params.items():
        client.log_param(run_id, key, value)
    client.log_artifacts(run_id, str(model_dir), "model")
    client.set_tag(run_id, "mlops.model_sha256", checksum)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_tampered_candidate_is_refused_before_anything_is_written(cli_env, capsys, client, good,
                                                                   tmp_path: Path) -> None:
    model_dir = _copy_model(client, good, tmp_path / "m")
    run_id = _log_run(client, model_dir, good, "0" * 64)  # the file does not match the recorded checksum
    name = "promo-tampered"
    code, out, err = promote(capsys, run_id, "--name", name)
    assert code == 1 and not out
    assert "model refused:" in err and "does not match the checksum" in err and err.count("\n") == 1
    assert not client.search_model_versions(f"name = '{name}'")
    assert verdict_runs(client, name) == []


def test_pickle_champion_is_never_unpickled(cli_env, capsys, client, good, bad, tmp_path: Path) -> None:
    """An attacker re-points the champion at a pickle: the gate refuses to compare, and nothing runs."""
    marker = tmp_path / "pwned"
    model_dir = _copy_model(client, bad, tmp_path / "m")
    (model_dir / MODEL_FILE).unlink()
    (model_dir / "model.pkl").write_bytes(pickle.dumps(RunsCommand(f"touch {marker}")))

    def to_pickle(flavors: dict) -> None:
        flavors["sklearn"].update(serialization_format="cloudpickle", pickled_model="model.pkl")
        flavors["sklearn"].pop("skops_trusted_types", None)
        flavors["python_function"]["model_path"] = "model.pkl"

    edit_mlmodel(model_dir, to_pickle)
    hostile = _log_run(client, model_dir, bad, file_sha256(model_dir / "model.pkl"))
    name = "promo-pickle"
    client.create_registered_model(name)
    source = client.get_run(hostile).info.artifact_uri + "/model"
    version = client.create_model_version(name, source, run_id=hostile, await_creation_for=30).version
    client.set_registered_model_alias(name, "champion", version)

    code, out, _ = promote(capsys, good.run_id, "--name", name)
    assert code == REFUSED, out
    assert "cannot be compared: model refused:" in out and "cloudpickle" in out
    assert champion_run(client, name) == hostile
    assert not marker.exists(), "the champion's pickle ran"
    code, out, _ = promote(capsys, good.run_id, "--name", name, "--force")  # the way out, recorded
    assert code == 0 and champion_run(client, name) == good.run_id
    assert not marker.exists()


def test_a_promotion_never_calls_mlflows_loaders(cli_env, capsys, good, bad,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow.pyfunc
    import mlflow.sklearn

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded outside the safe loader")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", forbidden)
    monkeypatch.setattr(mlflow.sklearn, "load_model", forbidden)
    assert promote(capsys, bad.run_id, "--name", "promo-loaders")[0] == 0
    code, out, err = promote(capsys, good.run_id, "--name", "promo-loaders")
    assert code == 0 and "champion promo-loaders@champion (version 1)" in out, err


# -- mlops_promotions_total -------------------------------------------------------------------------------

def test_verdict_runs_from_mlflow_are_counted_once(cli_env, capsys, client, good, bad) -> None:
    name = "promo-counted"
    promote(capsys, bad.run_id, "--name", name)
    promote(capsys, good.run_id, "--name", name)
    promote(capsys, bad.run_id, "--name", name)
    found = verdict_runs(client, name)
    counter = PromotionMetrics()
    experiments = {found[0].info.experiment_id: promotion.PROMOTIONS_EXPERIMENT}
    assert counter.observe_runs(found, experiments) == 3
    assert counter.observe_runs(found, experiments) == 0  # a sync reads runs again: counted once
    assert counter.counts() == {"promoted": 2, "forced": 0, "refused": 1}
    samples = {s.labels["result"]: s.value for f in counter.collect() for s in f.samples}
    assert samples == {"promoted": 2.0, "forced": 0.0, "refused": 1.0}


def test_a_sweep_moves_the_alias_only_through_the_gate(cli_env, capsys, client, good, bad) -> None:
    """`sweep --register --alias` is no way around the gate: a sweep whose best trial loses to the
    champion registers its model, leaves the alias where it was and says so, with a verdict run."""
    from mlops_local.sweep.run import run_sweep
    from mlops_local.sweep.spec import SweepSpec

    name = "promo-sweep"
    assert promote(capsys, good.run_id, "--name", name)[0] == 0
    # Ridge regularised into near-constants (as `bad`): every trial scores about 0 against good's ~0.45.
    spec = SweepSpec(DatasetSpec("diabetes"), "ridge", strategy="grid", experiment=EXPERIMENT, jobs=1,
                     ranges={"alpha": "100000|300000"}, search=("alpha",), register=name, alias="champion")
    result = run_sweep(spec, Settings.from_env(cli_env))

    assert result.status == "FINISHED" and result.best is not None and result.best.score < 0.1
    assert result.promotion == "refused" and not result.alias_set
    assert champion_run(client, name) == good.run_id
    versions = {v.run_id: v.version for v in client.search_model_versions(f"name = '{name}'")}
    assert versions[result.best.run_id] == result.registered_version  # registered, without the alias
    assert any("The gate refused: @champion stays on version 1" in w and f"{good.metrics['r2']:.4f}" in w
               for w in result.warnings), result.warnings
    verdict = verdict_runs(client, name)[-1]
    assert verdict.data.params["result"] == "refused"
    assert verdict.data.params["candidate_run_id"] == result.best.run_id

    # The command line prints the registration without the alias, and the refusal among its warnings.
    code = cli.main(["sweep", "--dataset", "diabetes", "--model", "ridge", "--strategy", "grid",
                     "--param-range", "alpha=100000|300000", "--search", "alpha", "--jobs", "1",
                     "--experiment", EXPERIMENT, "--register", name, "--alias", "champion"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(alias champion)" not in out and "The gate refused" in out
    assert champion_run(client, name) == good.run_id

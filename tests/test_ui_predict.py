"""AppTest of the Predict page: a registered name@alias or a run, one-row form, CSV batch, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from mlops_local import runs
from mlops_local.ml import predict
from mlops_local.ml.types import TrainResult
from tests.apptest import open_app
from tests.postgres import on_both_stores

TARGET = "CO2 Emissions(g/km)"
REF = "ui-predict-co2@champion"


@pytest.fixture(scope="module")
def registered(ui_trained_run: TrainResult, mlflow_env: dict[str, str]) -> str:
    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    runs.register_model(client, ui_trained_run.run_id, "ui-predict-co2", "champion")
    return REF


@pytest.fixture(scope="module")
def reference_model(ui_trained_run: TrainResult, mlflow_env: dict[str, str]):
    """The same model loaded outside the UI, to check the page's numbers."""
    model = predict.load_model(ui_trained_run.model_uri, MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"]))
    return model, predict.input_fields(model)


def open_predict() -> AppTest:
    return open_app("predict")


def with_model(ref: str, typed: bool = False) -> AppTest:
    at = open_predict()
    if typed:
        at.text_input(key="predict_ref").set_value(ref).run()
    else:
        at.selectbox(key="predict_registered").set_value(ref).run()
    assert not at.exception, at.exception
    return at


@on_both_stores
def test_one_row_from_registered_alias(ui_env: dict[str, str], registered: str, reference_model) -> None:
    model, fields = reference_model
    at = with_model(registered)
    assert not at.error, [e.value for e in at.error]
    make = at.selectbox(key="predict_field_Make")
    assert "ACURA" in make.options and make.value == next(f.default for f in fields if f.name == "Make")
    engine = at.number_input(key="predict_field_Engine Size(L)")
    assert engine.value == next(f.default for f in fields if f.name == "Engine Size(L)")
    engine.set_value(5.0)
    at.button(key="predict_submit").click().run()
    assert not at.exception, at.exception
    shown = next(m for m in at.metric if m.label == "Prediction")
    expected = predict.predict_frame(model, predict.one_row({"Engine Size(L)": 5.0}, fields))
    assert float(shown.value) == pytest.approx(expected[predict.PREDICTION_COLUMN].iloc[0], abs=1e-3)


def test_model_from_a_run(ui_env: dict[str, str], ui_trained_run: TrainResult) -> None:
    at = open_predict()
    at.radio(key="predict_source").set_value("Run").run()
    at.selectbox(key="predict_experiment").set_value("ui-tests").run()
    at.selectbox(key="predict_run").set_value(ui_trained_run.run_id).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="predict_field_Fuel Type").options  # categories seen in training


def test_batch_csv_with_extra_column(ui_env: dict[str, str], registered: str, co2_csv: Path,
                                     reference_model) -> None:
    model, fields = reference_model
    rows = pd.read_csv(co2_csv).head(25).assign(Notes="x")
    at = with_model(registered)
    at.file_uploader(key="predict_upload").upload("cars.csv", rows.to_csv(index=False).encode(), "text/csv")
    at.run()
    assert not at.exception, at.exception
    # the extra column is named, then ignored; the target column is not "ignored": it scores the batch
    assert [w.value for w in at.warning] == ["Ignored 1 column(s) the model does not use: Notes"]
    out = next(d.value for d in at.dataframe if predict.PREDICTION_COLUMN in d.value.columns)
    expected, _ = predict.predict_table(model, rows, fields)
    assert len(out) == 25
    assert out[predict.PREDICTION_COLUMN].tolist() == pytest.approx(
        expected[predict.PREDICTION_COLUMN].tolist())
    assert at.get("download_button")


def test_batch_prediction_first_summary_and_scores(ui_env: dict[str, str], registered: str, co2_csv: Path,
                                                   reference_model) -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    model, fields = reference_model
    rows = pd.read_csv(co2_csv).iloc[100:160]
    at = _upload(with_model(registered), "cars.csv", rows.to_csv(index=False).encode())
    assert not at.exception, at.exception
    out = next(d.value for d in at.dataframe if predict.PREDICTION_COLUMN in d.value.columns)
    assert list(out.columns)[0] == predict.PREDICTION_COLUMN
    predicted = predict.predict_table(model, rows, fields)[0][predict.PREDICTION_COLUMN].to_numpy()
    actual = rows[TARGET].to_numpy(dtype=float)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Rows"] == "60"
    assert shown["Mean prediction"] == f"{predicted.mean():.4g}"
    assert shown["Min prediction"] == f"{predicted.min():.4g}"
    assert shown["Max prediction"] == f"{predicted.max():.4g}"
    assert shown["Batch R²"] == f"{r2_score(actual, predicted):.4f}"
    assert shown["Batch RMSE"] == f"{mean_squared_error(actual, predicted) ** 0.5:.4f}"
    assert shown["Batch MAE"] == f"{mean_absolute_error(actual, predicted):.4f}"

    # without the target column: the summary, no score
    at = _upload(with_model(registered), "cars.csv", rows.drop(columns=[TARGET]).to_csv(index=False).encode())
    shown = {m.label for m in at.metric}
    assert "Rows" in shown and not any(label.startswith("Batch") for label in shown)


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="predict_upload").upload(name, data, "text/csv")
    return at.run()


@pytest.mark.parametrize(("name", "change", "message"), [
    ("missing.csv", lambda f: f.drop(columns=["Make", "Cylinders"]),
     "missing column(s) the model needs: Make, Cylinders"),
    ("text.csv", lambda f: f.assign(**{"Engine Size(L)": ["big"] + [2.0] * (len(f) - 1)}),
     "column 'Engine Size(L)' must hold numbers; row(s) 1"),
    ("empty.csv", lambda f: f.head(0), "no data rows"),
])
def test_bad_batches(ui_env: dict[str, str], registered: str, co2_csv: Path, name: str, change,
                     message: str) -> None:
    frame = change(pd.read_csv(co2_csv).head(5))
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    at = _upload(with_model(registered), name, buffer.getvalue().encode())
    assert not at.exception, at.exception
    assert at.error and message in at.error[0].value, [e.value for e in at.error]
    assert not at.get("download_button")


def test_unreadable_and_oversized_uploads(ui_env: dict[str, str], registered: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_local.settings import get_settings

    at = _upload(with_model(registered), "noise.csv", bytes(range(256)) * 40)
    assert not at.exception, at.exception
    assert at.error and "noise.csv" in at.error[0].value

    monkeypatch.setenv("MLOPS_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()
    at = _upload(with_model(registered), "big.csv", b"a,b\n" + b"1,2\n" * 300_000)
    assert not at.exception, at.exception
    assert at.error and "more than the 1 MB allowed" in at.error[0].value


def test_typed_reference(ui_env: dict[str, str], registered: str, ui_trained_run: TrainResult) -> None:
    for ref in (registered, "ui-predict-co2/1", ui_trained_run.run_id):
        at = with_model(ref, typed=True)
        assert not at.error, (ref, [e.value for e in at.error])
        assert at.selectbox(key="predict_field_Make").options


def test_unknown_alias_is_a_message(ui_env: dict[str, str], registered: str) -> None:
    at = with_model("no-such-model@champion", typed=True)
    assert at.error and "no registered model version no-such-model@champion" in at.error[0].value

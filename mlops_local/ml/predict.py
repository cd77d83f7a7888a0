"""Predictions with a logged model: load it, describe its inputs, check a batch, predict.

The input form comes from the model's signature (column names and types). Sensible values come from
the fitted pipeline itself: the imputers hold each numeric column's training median and each text
column's most frequent value, the one-hot encoders the categories seen in training.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from mlops_local.errors import UserError
from mlops_local.ml.modelio import METADATA_KEY

log = logging.getLogger(__name__)

PREDICTION_COLUMN = "prediction"
HINTS_KEY = METADATA_KEY  # MLmodel metadata key of the training engine's feature hints
NUMBER_KINDS = ("number", "integer")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_ALIAS_URI = re.compile(r"^models:/([^/@]+)@([\w\-]+)$")
# MLflow type name -> form field kind
_KINDS = {"double": "number", "float": "number", "long": "integer", "integer": "integer",
          "boolean": "boolean", "string": "text", "datetime": "text"}


@dataclass(frozen=True)
class InputField:
    """One input column: name, kind (number, integer, boolean, category, text), default, choices, help."""

    name: str
    kind: str
    default: object = None
    choices: tuple[str, ...] = ()
    help: str = ""


def model_uri(choice: str) -> str:
    """URI for a Predict choice: 'name@alias', 'name/3', a run id, or any models:/ or runs:/ URI."""
    choice = choice.strip()
    if not choice:
        raise UserError("no model chosen: pick a run or type a registered model as name@alias")
    if choice.startswith(("models:/", "runs:/")):
        return choice
    if _RUN_ID.match(choice):
        return f"runs:/{choice}/model"
    if "@" in choice or "/" in choice:
        return f"models:/{choice}"
    raise UserError(f"{choice!r} is not a model reference: use name@alias (e.g. co2-model@champion), "
                    "name/version, a run id, or a models:/ or runs:/ URI")


def pin_uri(client: MlflowClient, uri: str) -> str:
    """``models:/name@alias`` as the ``models:/name/<version>`` it points at now (caches never go stale)."""
    match = _ALIAS_URI.match(uri)
    if match is None:
        return uri
    name, alias = match.groups()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise UserError(f"no registered model version {name}@{alias}: {exc.message}") from None
    return f"models:/{name}/{version.version}"


def artifact_location(client: MlflowClient, uri: str) -> str:
    """Where the files of a models:/ or runs:/ URI live, resolved with ``client``'s own server.

    MLflow resolves ``models:/`` through the process-wide registry URI whatever tracking URI a
    download is given, so the UI (which holds an explicit client) resolves it itself.
    """
    try:
        if uri.startswith("runs:/"):
            run_id, _, path = uri[len("runs:/"):].partition("/")
            return client.get_run(run_id).info.artifact_uri.rstrip("/") + (f"/{path}" if path else "")
        if uri.startswith("models:/"):
            pinned = pin_uri(client, uri)
            name, _, version = pinned[len("models:/"):].partition("/")
            if not version:  # models:/<logged model id>
                return client.get_logged_model(name).artifact_location
            return client.get_model_version_download_uri(name, version)
    except MlflowException as exc:
        raise UserError(f"cannot find model {uri}: {exc.message}") from None
    return uri


def expected_checksum(client: MlflowClient, uri: str) -> str | None:
    """The model sha256 recorded on the run that logged ``uri`` (None when that run recorded none)."""
    from mlops_local.runmeta import MODEL_ARTIFACT, TAG_MODEL_SHA256

    try:
        if uri.startswith("runs:/"):
            run_id, _, path = uri[len("runs:/"):].partition("/")
            if path.strip("/") != MODEL_ARTIFACT:
                return None  # the checksum covers the run's model artifact only
        elif uri.startswith("models:/"):
            name, _, version = pin_uri(client, uri)[len("models:/"):].partition("/")
            run_id = (client.get_model_version(name, version).run_id if version
                      else client.get_logged_model(name).source_run_id)
        else:
            return None
        return client.get_run(run_id).data.tags.get(TAG_MODEL_SHA256) if run_id else None
    except MlflowException as exc:
        raise UserError(f"cannot find the run of model {uri}: {exc.message}") from None


def load_model(uri: str, client: MlflowClient | None = None) -> PyFuncModel:
    """Download and safely load a model (skops only, our allowlist, checksum checked); UserError if not.

    The one loader of the project: the Predict page, batch predictions and every future caller go
    through it; a model it will not load raises :class:`~mlops_local.ml.safeload.ModelRefused`.
    """
    import mlflow.artifacts

    from mlops_local.ml.safeload import load_local

    client = client if client is not None else MlflowClient()
    location = artifact_location(client, uri)
    expected = expected_checksum(client, uri)
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp,
                                                        tracking_uri=client.tracking_uri)
        except MlflowException as exc:
            raise UserError(f"cannot load model {uri}: {exc.message}") from None
        except OSError as exc:
            raise UserError(f"cannot load model {uri}: {exc}") from None
        return load_local(Path(local), expected)


def _walk(estimator: object) -> list[object]:
    """The estimator and every step or transformer nested in it (pipelines, column transformers)."""
    found = [estimator]
    for _, step in getattr(estimator, "steps", []) or []:
        found.extend(_walk(step))
    return found


def _column_transformers(estimator: object) -> list[object]:
    return [e for e in _walk(estimator) if hasattr(e, "transformers_")]


def training_hints(estimator: object) -> tuple[dict[str, object], dict[str, tuple[str, ...]]]:
    """(default per column, categories per column) read from a fitted sklearn pipeline's transformers."""
    defaults: dict[str, object] = {}
    categories: dict[str, tuple[str, ...]] = {}
    for transformer in _column_transformers(estimator):
        for _, part, columns in transformer.transformers_:
            if isinstance(part, str) or not isinstance(columns, (list, tuple, np.ndarray, pd.Index)):
                continue  # "drop" / "passthrough" / columns given by position
            columns = [str(c) for c in columns]
            for step in _walk(part):
                stats = getattr(step, "statistics_", None)
                if stats is not None and len(stats) == len(columns):
                    for column, value in zip(columns, stats, strict=True):
                        defaults.setdefault(column, value.item() if hasattr(value, "item") else value)
                cats = getattr(step, "categories_", None)
                if cats is not None and len(cats) == len(columns):
                    for column, values in zip(columns, cats, strict=True):
                        categories[column] = tuple(str(v) for v in values if not pd.isna(v))
    return defaults, categories


def _raw_model(model: PyFuncModel) -> object | None:
    try:
        return model.get_raw_model()
    except (NotImplementedError, AttributeError):
        return None


def model_hints(model: PyFuncModel) -> dict:
    """Training-value hints mlops-local stores in the MLmodel metadata ({} for other models)."""
    metadata = getattr(model.metadata, "metadata", None) or {}
    hints = metadata.get(HINTS_KEY)
    return hints if isinstance(hints, dict) else {}


def _schema_columns(model: PyFuncModel, raw: object,
                    categories: Mapping[str, object]) -> list[tuple[str, str | None]]:
    """(column, kind from the signature or None when the signature allows any type)."""
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():
        return [(spec.name, _KINDS.get(getattr(spec.type, "name", str(spec.type)))) for spec in schema.inputs]
    names = [str(n) for n in getattr(raw, "feature_names_in_", [])]
    if not names:
        raise UserError("the model has no input signature and its column names are unknown; "
                        "retrain it with mlops-local")
    return [(n, "category" if n in categories else None) for n in names]


def input_fields(model: PyFuncModel) -> list[InputField]:
    """The model's inputs in order, with training defaults and the categories seen in training."""
    raw = _raw_model(model)
    defaults, categories = training_hints(raw) if raw is not None else ({}, {})
    hints = model_hints(model)
    numeric_hints = hints.get("numeric") or {}
    text_hints = hints.get("categorical") or {}
    fields = []
    for name, kind in _schema_columns(model, raw, categories):
        choices = categories.get(name) or tuple(str(v) for v in text_hints.get(name, ()))
        default = defaults.get(name)
        numeric_default = isinstance(default, (int, float)) and not isinstance(default, bool)
        if kind is None:  # a column typed Any: numeric per the hints or the imputer
            kind = "number" if name in numeric_hints or (numeric_default and not choices) else "text"
        if kind == "text" and choices:
            kind = "category"
        info = numeric_hints.get(name) or {}
        help_text = ""
        if kind in NUMBER_KINDS:
            median = info.get("median", default if numeric_default else None)
            default = float(median) if isinstance(median, (int, float)) and np.isfinite(median) else 0.0
            if kind == "integer":
                default = int(round(default))
            if {"min", "max"} <= set(info):
                help_text = f"Training values: {info['min']:g} to {info['max']:g}, median {default:g}."
        elif kind == "category":
            default = str(default) if default is not None and str(default) in choices else choices[0]
            help_text = f"{len(choices)} values seen in training; a new one is allowed."
        elif kind == "boolean":
            default = bool(default) if default is not None else False
        else:
            default = "" if default is None else str(default)
        fields.append(InputField(name=name, kind=kind, default=default, choices=choices, help=help_text))
    return fields


def one_row(values: Mapping[str, object], fields: Sequence[InputField]) -> pd.DataFrame:
    """A one-row frame from form values, in the model's column order."""
    return check_batch(pd.DataFrame([{f.name: values.get(f.name, f.default) for f in fields}]), fields)[0]


def _bad_rows(mask: pd.Series) -> str:
    rows = [str(i + 1) for i in np.flatnonzero(mask.to_numpy())[:5]]
    more = int(mask.sum()) - len(rows)
    return ", ".join(rows) + (f" and {more} more" if more > 0 else "")


def check_batch(frame: pd.DataFrame, fields: Sequence[InputField]) -> tuple[pd.DataFrame, list[str]]:
    """(the columns the model takes, converted to its types; the extra columns ignored) or UserError."""
    names = [f.name for f in fields]
    present = {str(c) for c in frame.columns}
    missing = [n for n in names if n not in present]
    if missing:
        raise UserError(f"missing column(s) the model needs: {', '.join(missing)}. "
                        f"The model takes: {', '.join(names)}")
    if frame.empty:
        raise UserError("the table has no rows to predict")
    frame = frame.rename(columns=str)
    extra = [c for c in frame.columns if c not in names]
    out = frame[names].copy()
    for f in fields:
        column = out[f.name]
        if f.kind in NUMBER_KINDS:
            numbers = pd.to_numeric(column, errors="coerce")
            blank = column.isna() | column.astype(str).str.strip().isin(["", "nan", "NaN", "None", "<NA>"])
            bad = numbers.isna() & ~blank
            if bad.any():
                raise UserError(f"column {f.name!r} must hold numbers; row(s) {_bad_rows(bad)} do not "
                                f"(first: {column[bad].iloc[0]!r})")
            if f.kind == "integer":
                if numbers.isna().any():
                    raise UserError(f"column {f.name!r} needs a whole number in every row; row(s) "
                                    f"{_bad_rows(numbers.isna())} are empty")
                out[f.name] = numbers.astype("int64")
            else:
                out[f.name] = numbers.astype("float64")
        elif f.kind == "boolean":
            out[f.name] = column.astype(bool)
        else:
            # Missing text stays NaN, as pandas reads it from a file (the imputer's missing value).
            out[f.name] = pd.Series([np.nan if pd.isna(v) else str(v) for v in column], index=out.index,
                                    dtype=object)
    return out, extra


def predict_frame(model: PyFuncModel, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a prediction column appended (UserError when the model refuses the input)."""
    try:
        predictions = np.asarray(model.predict(frame), dtype=float).ravel()
    except MlflowException as exc:
        raise UserError(f"the model refused the input: {exc.message}") from None
    except (ValueError, TypeError) as exc:
        raise UserError(f"the model could not predict on this input: {exc}") from None
    out = frame.copy()
    column = PREDICTION_COLUMN
    while column in out.columns:
        column += "_"
    out[column] = predictions
    return out


def predict_table(model: PyFuncModel, frame: pd.DataFrame,
                  fields: Sequence[InputField]) -> tuple[pd.DataFrame, list[str]]:
    """(the uploaded table with the prediction as its first column, the extra columns the model ignored)."""
    checked, extra = check_batch(frame, fields)
    predicted = predict_frame(model, checked)
    out = frame.rename(columns=str).reset_index(drop=True)
    column = predicted.columns[-1]
    while column in out.columns:
        column += "_"
    out.insert(0, column, predicted.iloc[:, -1].to_numpy())
    return out, extra


@dataclass(frozen=True)
class BatchSummary:
    """A batch's predictions in numbers and, when its target column came along, how good they were."""

    rows: int
    mean: float
    min: float
    max: float
    target: str | None = None  # the target column scored against (None: not in the table)
    scored_rows: int = 0  # rows with a numeric target value
    metrics: dict[str, float] = field(default_factory=dict)  # r2, rmse, mae over the scored rows
    note: str = ""  # why the target column could not be scored


def batch_summary(out: pd.DataFrame, target: str | None) -> BatchSummary:
    """Rows, mean/min/max prediction of a predict_table result; R²/RMSE/MAE when ``target`` is a column."""
    from mlops_local.ml.evaluation import regression_metrics

    predicted = out.iloc[:, 0].to_numpy(dtype=float)
    base = {"rows": len(out), "mean": float(np.mean(predicted)), "min": float(np.min(predicted)),
            "max": float(np.max(predicted))}
    if not target or target not in out.columns:
        return BatchSummary(**base)
    actual = pd.to_numeric(out[target], errors="coerce").to_numpy(dtype=float)
    known = np.isfinite(actual) & np.isfinite(predicted)
    if known.sum() < 2:
        return BatchSummary(**base, target=target, scored_rows=int(known.sum()),
                            note=f"column {target!r} has fewer than 2 numbers: the batch is not scored")
    return BatchSummary(**base, target=target, scored_rows=int(known.sum()),
                        metrics=regression_metrics(actual[known], predicted[known]))


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """UTF-8 CSV of a predictions table (for a download button)."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")

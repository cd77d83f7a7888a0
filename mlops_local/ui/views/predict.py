"""Predict: a run's model or a registered name@alias; one row from a form, or a CSV batch to download."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlops_local import runs
from mlops_local.ml import predict
from mlops_local.ml.types import DEFAULT_EXPERIMENT
from mlops_local.ui import common

REGISTERED, RUN = "Registered model", "Run"
FIELD_PREFIX = "predict_field_"
LOADED_KEY = "predict_loaded_uri"
BATCH_KEY = "predict_batch"

st.title("Predict")
settings = common.settings()
uri = settings.effective_tracking_uri


def field_key(name: str) -> str:
    """Widget key of one input of the one-row form."""
    return FIELD_PREFIX + name


def _choose() -> str | None:
    """The model reference the user picked (name@alias, name/version or a run id), or None."""
    source = st.radio("Model from", [REGISTERED, RUN], key="predict_source", horizontal=True)
    if source == REGISTERED:
        choices = common.registered_choices(uri)
        typed = st.text_input("Model reference", key="predict_ref",
                              placeholder="name@alias, name/version or a run id; empty = pick from the list")
        if typed.strip():
            return typed.strip()
        if not choices:
            st.info("No registered model yet: register one on the Runs page, or pick a run.")
            return None
        return st.selectbox("Registered model", choices, key="predict_registered")
    names = common.experiment_names(uri)
    if not names:
        st.info("No experiment yet: train a model on the Train page.")
        return None
    experiment = st.selectbox("Experiment", names, key="predict_experiment",
                              index=names.index(DEFAULT_EXPERIMENT) if DEFAULT_EXPERIMENT in names else 0)
    frame = common.runs_page(uri, experiment, max_results=100).frame
    finished = frame[frame["status"] == "FINISHED"]
    if finished.empty:
        st.info("No finished run in this experiment.")
        return None
    labels = {row["run_id"]: f"{runs.run_label(row)} · R² {row.get('r2', float('nan')):.4f}"
              for row in finished.to_dict("records")}
    return st.selectbox("Run", list(labels), key="predict_run", format_func=lambda rid: labels[rid])


def _form(model: object, fields: list[predict.InputField]) -> None:
    with st.form("predict_form"):
        values: dict[str, object] = {}
        slots = st.columns(3)
        for i, f in enumerate(fields):
            with slots[i % 3]:
                key = field_key(f.name)
                if f.kind == "number":
                    values[f.name] = st.number_input(f.name, value=float(f.default), format="%g", key=key,
                                                     help=f.help or None)
                elif f.kind == "integer":
                    values[f.name] = st.number_input(f.name, value=int(f.default), step=1, key=key)
                elif f.kind == "category":
                    values[f.name] = st.selectbox(f.name, f.choices, index=f.choices.index(f.default),
                                                  key=key, accept_new_options=True, help=f.help or None)
                elif f.kind == "boolean":
                    values[f.name] = st.checkbox(f.name, value=bool(f.default), key=key)
                else:
                    values[f.name] = st.text_input(f.name, value=str(f.default), key=key)
        submitted = st.form_submit_button("Predict", type="primary", key="predict_submit")
    if submitted:
        with common.user_errors("Prediction failed"):
            out = predict.predict_frame(model, predict.one_row(values, fields))
            target = predict.model_hints(model).get("target")
            st.metric("Prediction", f"{out[predict.PREDICTION_COLUMN].iloc[0]:.4f}",
                      help=f"Predicted {target}" if target else None)
            st.session_state["predict_last_row"] = out


def _summary(summary: predict.BatchSummary) -> None:
    """The batch in numbers above its table; its R², RMSE and MAE when the target column came along."""
    cols = st.columns(4)
    cols[0].metric("Rows", f"{summary.rows:,}")
    cols[1].metric("Mean prediction", f"{summary.mean:.4g}")
    cols[2].metric("Min prediction", f"{summary.min:.4g}")
    cols[3].metric("Max prediction", f"{summary.max:.4g}")
    if summary.metrics:
        st.caption(f"Scored against the target column `{summary.target}` ({summary.scored_rows:,} rows "
                   "with a value): how the model does on this data")
        cols = st.columns(4)
        for col, (name, label) in zip(cols, (("r2", "R²"), ("rmse", "RMSE"), ("mae", "MAE")), strict=False):
            col.metric(f"Batch {label}", f"{summary.metrics[name]:.4f}")
    elif summary.note:
        st.caption(summary.note)


def _batch(model: object, fields: list[predict.InputField], pinned: str) -> None:
    st.caption("Columns the model takes: " + ", ".join(f.name for f in fields))
    uploaded = st.file_uploader(f"CSV or Parquet file (at most {settings.upload_limit_mb} MB)",
                                type=common.UPLOAD_TYPES, key="predict_upload",
                                max_upload_size=settings.upload_limit_mb)
    if uploaded is None:
        return
    with common.user_errors(f"Cannot predict on {uploaded.name}"):
        frame = common.read_upload(uploaded, "predict_upload_frame")
        batch_id = (st.session_state["predict_upload_frame"][0], pinned)
        cached = st.session_state.get(BATCH_KEY)
        if cached is None or cached[0] != batch_id:
            out, extra = predict.predict_table(model, frame, fields)
            st.session_state[BATCH_KEY] = cached = (batch_id, out, extra)
        _, out, extra = cached
        target = predict.model_hints(model).get("target")
        summary = predict.batch_summary(out, target if isinstance(target, str) else None)
        ignored = [c for c in extra if c != summary.target]
        if ignored:
            st.warning(f"Ignored {len(ignored)} column(s) the model does not use: {', '.join(ignored)}")
        _summary(summary)
        first = st.column_config.NumberColumn(format="%.4f", pinned=True)
        st.dataframe(out, key="predict_batch_table", hide_index=True, column_config={out.columns[0]: first})
        st.download_button("Download predictions (CSV)", predict.to_csv_bytes(out),
                           file_name=f"predictions-{Path(uploaded.name).stem}.csv", mime="text/csv",
                           key="predict_download", on_click="ignore")


with common.user_errors():
    choice = _choose()
    if choice:
        model_uri = predict.model_uri(str(choice))
        pinned = predict.pin_uri(common.client(), model_uri)
        model, fields = common.loaded_model(pinned, uri)
        if st.session_state.get(LOADED_KEY) != pinned:
            for key in [k for k in st.session_state if str(k).startswith(FIELD_PREFIX)]:
                del st.session_state[key]
            st.session_state[LOADED_KEY] = pinned
        st.caption(f"Model `{pinned}` · {len(fields)} input column(s); defaults are the training medians and "
                   "most frequent values.")
        one, batch = st.tabs(["One row", "Batch (CSV)"])
        with one:
            _form(model, fields)
        with batch:
            _batch(model, fields, pinned)

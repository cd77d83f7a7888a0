"""Train: dataset and model (co2_canada + random_forest preselected), live progress, result cards."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from mlops_local import runs
from mlops_local.errors import UserError
from mlops_local.metrics.labels import clean_label
from mlops_local.metrics.panels import get_panel, render_expr
from mlops_local.ml import datasets, training
from mlops_local.ml.catalog import CATALOG, DEFAULT_MODEL
from mlops_local.ml.types import DEFAULT_EXPERIMENT, DatasetSpec, TrainRequest
from mlops_local.ui import charts, common, jobs, widgets

JOB_KEY = "train_job"
FRAME_KEY = "train_upload_frame"
CHECK_KEY = "train_upload_check"
SHOWN_KEY = "train_job_shown"
CHIPS_FOR_KEY = "train_features_for"  # (file id, target) the feature chips were last set for
# The browser redraws on every fragment run, which on a 2-core laptop slowed a 3 s fit to 9 s when
# polling 4 times a second; so a poll starts once a second and lasts 0.9 s, sleeping on the job: the
# steps show with a second's resolution and the end at once.
POLL_SECONDS = 1.0
LONG_POLL_SECONDS = 0.9
BUILTIN, UPLOAD = "Built-in", "Upload a file"
METRIC_CARDS = (("r2", "R²"), ("rmse", "RMSE"), ("mae", "MAE"))
# Material icons ship with Streamlit: emoji need a font many Linux desktops lack.
STEP_MARKS = {"done": ":green[:material/check_circle:]", "running": ":blue[:material/pending:]",
              "waiting": ":gray[:material/radio_button_unchecked:]", "failed": ":red[:material/error:]"}

st.title("Train")
settings = common.settings()
job: jobs.TrainingJob | None = st.session_state.get(JOB_KEY)
running = job is not None and job.running


def _sync_features(file_id: str, columns: list[str], target: str) -> None:
    """Set the feature chips to every column but the target, keeping a user's own edit.

    Set through session state, not a widget default: Streamlit keys a widget by its key alone, so a
    browser keeps showing its old chips when only the options or the default change, while the server
    silently drops the chips that are no longer options (the run then trained on other features).
    """
    drawn_for = st.session_state.get(CHIPS_FOR_KEY)
    current = st.session_state.get("train_features")
    if drawn_for == (file_id, target) and current is not None:
        return
    every_other = [c for c in columns if c != target]
    if drawn_for is None or drawn_for[0] != file_id or current is None \
            or list(current) == [c for c in columns if c != drawn_for[1]]:
        chips = every_other  # not edited: follow the target, the old target comes back
    else:
        chips = [c for c in current if c != target]
    st.session_state["train_features"] = chips
    st.session_state[CHIPS_FOR_KEY] = (file_id, target)


def _upload_spec() -> tuple[DatasetSpec | None, pd.DataFrame | None]:
    """Upload, target and feature pickers, quick profile; (spec, frame) when the data is usable."""
    uploaded = st.file_uploader(f"CSV or Parquet file (at most {settings.upload_limit_mb} MB)",
                                type=common.UPLOAD_TYPES, key="train_upload",
                                max_upload_size=settings.upload_limit_mb)
    if uploaded is None:
        st.info("Upload a CSV or Parquet file, or pick a built-in dataset.")
        return None, None
    frame = None
    with common.user_errors():
        frame = common.read_upload(uploaded, FRAME_KEY)
    if frame is None:
        return None, None
    columns = [str(c) for c in frame.columns]
    file_id = st.session_state[FRAME_KEY][0]
    drawn_for = st.session_state.get(CHIPS_FOR_KEY)
    if "train_target" not in st.session_state or drawn_for is None or drawn_for[0] != file_id:
        st.session_state["train_target"] = columns[-1]  # a new file: its last column, as most files have it
    target = st.selectbox("Target column (what to predict)", columns, key="train_target")
    _sync_features(file_id, columns, target)
    # wrap: every chip visible (in a column they would otherwise scroll in one row, most of them hidden).
    features = st.multiselect("Feature columns", [c for c in columns if c != target], key="train_features",
                              wrap=True)
    st.caption(f"{len(features)} of {len(columns) - 1} columns as features.")
    info = datasets.profile(frame, target)
    with st.expander(f"Profile: {info['rows']:,} rows, {len(columns)} columns", expanded=False):
        st.dataframe(pd.DataFrame({"type": info["dtypes"], "missing": info["missing"]}),
                     column_config={"missing": st.column_config.ProgressColumn(
                         "missing", format="percent", min_value=0.0, max_value=1.0)},
                     key="train_profile")
        if info["target"]:
            st.caption(f"Target {target}: " + ", ".join(f"{k} {v:.4g}" for k, v in info["target"].items()))
            numbers = pd.to_numeric(frame[target], errors="coerce").dropna()
            if not numbers.empty:
                st.bar_chart(numbers.value_counts(bins=30, sort=False).rename(lambda i: f"{i.mid:.4g}"),
                             height=160)
    spec = DatasetSpec(name=uploaded.name, target=target, features=tuple(features) or None)
    check_id = (file_id, target, tuple(features))
    previous = st.session_state.get(CHECK_KEY)
    if previous is None or previous[0] != check_id:
        message = None
        try:
            datasets.load_dataset(spec, frame)
        except UserError as exc:
            message = str(exc)
        st.session_state[CHECK_KEY] = (check_id, message)
    message = st.session_state[CHECK_KEY][1]
    if message:
        st.error(message)
        return None, None
    return spec, frame


def _dataset_spec() -> tuple[DatasetSpec | None, pd.DataFrame | None]:
    source = st.radio("Dataset source", [BUILTIN, UPLOAD], key="train_source", horizontal=True)
    if source == UPLOAD:
        return _upload_spec()
    names = list(datasets.BUILTINS)
    name = st.selectbox("Built-in dataset", names, index=names.index(datasets.DEFAULT_DATASET),
                        key="train_dataset", format_func=lambda n: f"{n}: {datasets.BUILTINS[n].description}")
    builtin = datasets.BUILTINS[name]
    st.caption(f"Target: {builtin.target}")
    options: dict[str, object] = {}
    if builtin.options:
        with st.expander("Dataset options"):
            options = widgets.dataset_options(name, builtin.options)
    return DatasetSpec(name=name, options=options), None


def _new_job(request: TrainRequest, frame: pd.DataFrame | None) -> jobs.TrainingJob:
    client = common.client()
    exporter = getattr(common.runtime(), "exporter", None)

    def baseline(request: TrainRequest) -> dict[str, float]:
        experiment_id = runs.experiment_id(client, request.experiment)
        if experiment_id is None:
            return {}
        return runs.best_earlier(client, experiment_id, request.dataset.name, before=time.time())

    return jobs.TrainingJob(request=request, settings=settings, train_fn=training.train, frame=frame,
                            client=client, publish=exporter.observe if exporter is not None else None,
                            baseline=baseline)


def _draw_progress(current: jobs.TrainingJob) -> None:
    request = current.request
    title = f"{request.model} on {request.dataset.name}"
    marks = STEP_MARKS
    lines = "  \n".join(f"{marks[s.state]} {s.label}"
                        + (f" · {s.seconds:.2f} s" if s.seconds is not None else "") for s in current.steps())
    if current.running:
        # A plain box, not st.status: its spinning icon costs a browser a good share of a core.
        with st.container(border=True):
            st.markdown(f"**Training {title}… {current.elapsed():.1f} s**")
            st.progress(current.fraction())
            st.markdown(lines)
        return
    failed = current.error is not None
    label = (f"Training {title} failed after {current.elapsed():.1f} s" if failed
             else f"Trained {title} in {current.elapsed():.1f} s")
    with st.status(label, state="error" if failed else "complete", expanded=False):
        st.markdown(lines)


def _job_panel(poll: bool) -> None:
    """Steps with their elapsed time, then the results.

    A poll lasts LONG_POLL_SECONDS, sleeping on the job, so the results are drawn the moment the
    training ends; the next poll then reruns the whole page (Train enabled again, polling stopped).
    """
    current: jobs.TrainingJob | None = st.session_state.get(JOB_KEY)
    if current is None:
        return
    if poll and st.session_state.get(SHOWN_KEY) is current:
        st.rerun()
    if poll and current.running:
        current.wait(LONG_POLL_SECONDS)
    _draw_progress(current)
    if current.done:
        # Cards and links at once; the charts (slow to draw in the browser) come with the rerun.
        _results(current, with_charts=not poll)
        if poll:
            st.session_state[SHOWN_KEY] = current
            common.clear_run_caches()


def _target(request: TrainRequest) -> str:
    """The name of the column the request predicts (a built-in dataset's own target by default)."""
    builtin = datasets.BUILTINS.get(request.dataset.name)
    return request.dataset.target or (builtin.target if builtin is not None else "target")


def _results(done: jobs.TrainingJob, with_charts: bool = True) -> None:
    if done.error:
        st.error(done.error)
        return
    result = done.result
    if result is None:
        return
    if done.warning:
        st.warning(done.warning)
    st.subheader(f"{result.model} on {result.dataset}")
    cards = st.columns(len(METRIC_CARDS))
    for slot, (metric, label) in zip(cards, METRIC_CARDS, strict=True):
        value = result.metrics.get(metric)
        if value is None:
            continue
        best = done.best_before.get(metric)
        better_up = runs.HIGHER_IS_BETTER.get(metric, True)
        delta = None if best is None else f"{value - best:+.4f}"
        same = delta is not None and float(delta) == 0.0  # as shown: no change is neither good nor bad
        slot.metric(label, f"{value:.4f}", delta="±0.0000" if same else delta,
                    delta_color="off" if same else ("normal" if better_up else "inverse"),
                    delta_arrow="off" if same else "auto",
                    help="Change against the best earlier run on this dataset"
                         + ("" if best is None else f" ({best:.4f})") + ".")
    # The label values the exporter publishes (sanitised), so the links find the series.
    labels = {k: clean_label(v) for k, v in
              (("experiment", result.experiment), ("dataset", result.dataset), ("model", result.model))}
    links = st.columns(3)
    links[0].link_button("Run in MLflow", common.mlflow_run_url(result.experiment_id, result.run_id),
                         width="stretch")
    links[1].link_button("R² in Prometheus", common.prometheus_graph_url(
        render_expr(get_panel("r2_over_time"), labels)), width="stretch")
    grafana = common.grafana_status()
    if grafana.up:
        links[2].link_button("Grafana dashboard", common.grafana_dashboard_url(labels), width="stretch")
    else:
        links[2].caption(common.grafana_note(grafana))
    if with_charts and result.y_test is not None and result.y_pred is not None:
        tabs = st.tabs(["Predicted vs actual", "Residuals", "Feature importance"])
        with tabs[0]:
            st.plotly_chart(charts.predicted_vs_actual(result.y_test, result.y_pred, _target(done.request)),
                            key="train_chart_pva")
        with tabs[1]:
            st.plotly_chart(charts.residuals(result.y_test, result.y_pred), key="train_chart_residuals")
        with tabs[2]:
            if result.feature_importance is not None and len(result.feature_importance):
                st.plotly_chart(charts.feature_importance(result.feature_importance),
                                key="train_chart_importance")
            else:
                st.caption("This model reports no feature importance.")


data_col, model_col = st.columns(2, gap="large")
with data_col:
    st.subheader("Data")
    spec, frame = _dataset_spec()
with model_col:
    st.subheader("Model")
    model_names = list(CATALOG)
    model_name = st.selectbox("Model", model_names, index=model_names.index(DEFAULT_MODEL), key="train_model",
                              format_func=lambda n: f"{CATALOG[n].label} ({n})")
    params = widgets.param_inputs(CATALOG[model_name])
    param_errors = widgets.invalid_params(CATALOG[model_name], params)
    with st.expander("Split, seed, cross-validation, experiment"):
        test_size = st.slider("Test size", 0.05, 0.5, 0.2, 0.05, key="train_test_size",
                              help="Share of the rows held out for the R², RMSE and MAE.")
        seed = st.number_input("Seed", 0, 2**31 - 1, 42, 1, key="train_seed")
        cv_folds = st.number_input("Cross-validation folds (0 = off)", 0, 20, 0, 1, key="train_cv",
                                   help="k-fold CV on the training part, reported as mean and std.")
        experiment = st.text_input("MLflow experiment", DEFAULT_EXPERIMENT, key="train_experiment").strip()

ready = spec is not None and bool(experiment) and not param_errors
# The click is read before the button is drawn: the run that starts the training draws the button
# already disabled (no extra rerun) and builds the request from this very run's widget values.
if st.session_state.get("train_button") and spec is not None and ready:
    if running:
        st.toast("A training is already running in this tab; wait for it to finish.")
    else:
        request = TrainRequest(dataset=spec, model=model_name, params=params, test_size=float(test_size),
                               seed=int(seed), cv_folds=int(cv_folds),
                               experiment=experiment or DEFAULT_EXPERIMENT, source="ui")
        job, _ = jobs.start_job(st.session_state, JOB_KEY, lambda: _new_job(request, frame))
        running = job.running
why_not = "A training is running in this tab" if running else (param_errors[0] if param_errors else None)
st.button("Train", key="train_button", type="primary", disabled=running or not ready, help=why_not)
if job is not None:
    st.fragment(_job_panel, run_every=POLL_SECONDS if running else None)(running)

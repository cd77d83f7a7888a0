"""Runs: the MLflow runs of an experiment, filtered and sorted by the server; compare; register."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone

import streamlit as st

from mlops_local import runs
from mlops_local.ml.catalog import CATALOG
from mlops_local.ml.datasets import BUILTINS
from mlops_local.ml.types import DEFAULT_EXPERIMENT, TAG_DATASET, TAG_MODEL
from mlops_local.ui import charts, common

ALL = "(all)"
NEWEST = "start_time"
TOKENS_KEY = "runs_page_tokens"
FILTERS_KEY = "runs_page_filters"
SEEN_KEY = "runs_seen_datasets"
SEEN_METRICS_KEY = "runs_seen_metrics"

st.title("Runs")
uri = common.settings().effective_tracking_uri


def _day_bounds(dates: object) -> tuple[datetime | None, datetime | None]:
    """(since, until) in UTC from the date range widget (until is the end of the last day)."""
    if not isinstance(dates, (tuple, list)) or not dates:
        return None, None
    since = datetime.combine(dates[0], time.min, tzinfo=timezone.utc)
    last = dates[1] if len(dates) > 1 else dates[0]
    return since, datetime.combine(last, time.min, tzinfo=timezone.utc) + timedelta(days=1)


def _registry_name(row: dict) -> str:
    text = f"{row.get(TAG_DATASET) or 'model'}-{row.get(TAG_MODEL) or ''}"
    return re.sub(r"[^\w\-]+", "-", text).strip("-")


def _register(run_id: str, name: str, alias: str) -> None:
    with common.user_errors("Registration failed"):
        version = runs.register_model(common.client(), run_id, name, alias or None)
        common.clear_run_caches()
        message = f"Registered as {version.name} version {version.version}"
        if alias:
            message += f" with alias @{alias}: predict with `{version.name}@{alias}`"
        st.success(message + ".")
        st.link_button("Open the model version in MLflow",
                       common.mlflow_model_url(version.name, version.version))


def _compare(page: runs.RunsPage, selected: list[str]) -> None:
    frame = page.frame
    labels = {rid: runs.run_label(row) for rid, row in frame.set_index("run_id", drop=False).iterrows()
              if rid in selected}
    metrics = [m for m in runs.metric_columns(frame.columns[len(runs.BASE_COLUMNS):])
               if frame.loc[frame["run_id"].isin(selected), m].notna().any()]
    tabs = st.tabs(["Metrics", "Params diff", "Parallel coordinates"])
    with tabs[0]:
        shown = st.multiselect("Metrics", metrics, default=[m for m in ("r2", "rmse", "mae") if m in metrics],
                               key="runs_compare_metrics")
        long = runs.metrics_long(frame, selected, shown)
        if long.empty:
            st.info("The selected runs have none of these metrics.")
        else:
            st.plotly_chart(charts.metric_bars(long), key="runs_chart_metrics")
    with tabs[1]:
        show_all = st.checkbox("Show params that are equal too", key="runs_params_all")
        diff = runs.params_diff({rid: page.params.get(rid, {}) for rid in selected}, labels,
                                only_different=not show_all)
        if diff.empty:
            st.info("The selected runs have the same params.")
        else:
            st.dataframe(diff, key="runs_params_table")
    with tabs[2]:
        parallel = runs.parallel_frame(frame, page.params, selected)
        st.plotly_chart(charts.parallel_coordinates(parallel), key="runs_chart_parallel")


with common.user_errors():
    names = common.experiment_names(uri)
    if not names:
        st.info("No experiment yet: train a model on the Train page.")
        st.stop()
    default_exp = names.index(DEFAULT_EXPERIMENT) if DEFAULT_EXPERIMENT in names else 0
    experiment = st.selectbox("Experiment", names, index=default_exp, key="runs_experiment")

    seen: set[str] = st.session_state.setdefault(SEEN_KEY, set())
    filters = st.columns([2, 2, 3, 2, 1, 1])
    dataset_options = [ALL, *sorted(set(BUILTINS) | seen)]
    dataset = filters[0].selectbox("Dataset", dataset_options, key="runs_dataset", accept_new_options=True)
    model = filters[1].selectbox("Model", [ALL, *CATALOG], key="runs_model")
    dates = filters[2].date_input("Started (UTC, from - to)", value=(), key="runs_dates")
    seen_metrics: set[str] = st.session_state.setdefault(SEEN_METRICS_KEY, set())
    sort_options = [NEWEST, *runs.METRIC_ORDER, *sorted(seen_metrics - set(runs.METRIC_ORDER))]
    sort_by = filters[3].selectbox("Sort by", sort_options, key="runs_sort",
                                   format_func=lambda s: "start time" if s == NEWEST else s)
    ascending = filters[4].toggle("Ascending", key="runs_ascending")
    limit = filters[5].selectbox("Per page", runs.PAGE_SIZES, key="runs_limit")
    since, until = _day_bounds(dates)
    query = {"dataset": None if dataset == ALL else dataset, "model": None if model == ALL else model,
             "since": since, "until": until, "sort_by": sort_by, "ascending": ascending, "max_results": limit}

    # Pagination: a stack of page tokens, reset whenever the query changes.
    signature = (experiment, tuple(sorted((k, str(v)) for k, v in query.items())))
    if st.session_state.get(FILTERS_KEY) != signature:
        st.session_state[FILTERS_KEY] = signature
        st.session_state[TOKENS_KEY] = [None]
    tokens: list[str | None] = st.session_state[TOKENS_KEY]
    page = common.runs_page(uri, experiment, page_token=tokens[-1], **query)
    frame = page.frame
    seen.update(d for d in frame[TAG_DATASET].dropna().unique() if d)
    seen_metrics.update(frame.columns[len(runs.BASE_COLUMNS):])

    if frame.empty:
        st.info("No runs match these filters." if len(tokens) == 1 else "No more runs.")
    exp_id = runs.experiment_id(common.client(), experiment) if not frame.empty else None
    table = frame.drop(columns=["run_id"]).assign(
        mlflow=[common.mlflow_run_url(exp_id or "0", rid) for rid in frame["run_id"]])
    metric_cols = list(frame.columns[len(runs.BASE_COLUMNS):])
    st.dataframe(
        table, key="runs_table", hide_index=True,
        column_config={
            "start_time": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "mlflow": st.column_config.LinkColumn("MLflow", display_text="open"),
            **{m: st.column_config.NumberColumn(m, format="%.4f") for m in metric_cols},
        },
    )
    nav = st.columns([1, 1, 6])
    if nav[0].button("First page", key="runs_first_page", disabled=len(tokens) == 1):
        st.session_state[TOKENS_KEY] = [None]
        st.rerun()
    if nav[1].button("Next page", key="runs_next_page", disabled=page.next_token is None):
        tokens.append(page.next_token)
        st.rerun()
    nav[2].caption(f"Page {len(tokens)} · {len(frame)} run(s)"
                   + (" · more on the next page" if page.next_token else ""))

    if not frame.empty:
        run_ids = list(frame["run_id"])
        records = frame.to_dict("records")
        label_of = {rid: runs.run_label(row) for rid, row in zip(run_ids, records, strict=True)}
        st.subheader("Compare")
        selected = st.multiselect("Runs to compare (two or more)", run_ids, key="runs_compare",
                                  format_func=lambda rid: label_of.get(rid, rid))
        if len(selected) >= 2:
            _compare(page, selected)
        elif selected:
            st.caption("Select at least one more run to compare.")

        st.subheader("Register a model")
        finished = [rid for rid, status in zip(run_ids, frame["status"], strict=True) if status == "FINISHED"]
        if not finished:
            st.info("No finished run on this page.")
        else:
            default_run = selected[0] if selected and selected[0] in finished else finished[0]
            run_id = st.selectbox("Run", finished, index=finished.index(default_run), key="runs_action_run",
                                  format_func=lambda rid: label_of.get(rid, rid))
            row = frame.set_index("run_id").loc[run_id].to_dict()
            st.link_button("Open this run in MLflow", common.mlflow_run_url(exp_id or "0", run_id))
            cols = st.columns([3, 2, 1])
            name = cols[0].text_input("Registered model name", _registry_name(row), key="runs_register_name")
            alias = cols[1].text_input("Alias", "champion", key="runs_register_alias",
                                       help="Letters, digits, '_' and '-', e.g. champion or challenger.")
            cols[2].write("")
            if cols[2].button("Register", key="runs_register_button", type="primary"):
                _register(run_id, name, alias.strip())

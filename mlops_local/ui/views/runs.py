"""Runs: an experiment's MLflow runs, filtered and sorted by the server; tick rows to compare or register.

Registering with an alias goes through the promotion gate (mlops_local.ml.promotion): the verdict (both
scores on the same held-out rows, the margin) is shown before the alias moves.

Sweep trials are folded under their sweep (its row shows the best trial's metrics); ticking one sweep
lists its trials, or "Show sweep trials" puts every trial in the table.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pandas as pd
import streamlit as st

from mlops_local import runs
from mlops_local.ml import promotion
from mlops_local.ml.catalog import CATALOG
from mlops_local.ml.datasets import BUILTINS
from mlops_local.ml.types import DEFAULT_EXPERIMENT
from mlops_local.runmeta import SOURCES, TAG_DATASET, TAG_MODEL, TAG_SOURCE
from mlops_local.ui import charts, common

ALL = "(all)"
NEWEST = "start_time"
TOKENS_KEY = "runs_page_tokens"
FILTERS_KEY = "runs_page_filters"
SEEN_KEY = "runs_seen_datasets"
SEEN_METRICS_KEY = "runs_seen_metrics"
TABLE_KEY = "runs_table"
TRIALS_KEY = "runs_trials_table"
NAME_KEY = "runs_register_name"
AUTO_NAME_KEY = "runs_register_auto_name"  # the name last filled in for the user (not typed by them)
TYPED_NAME_KEY = "runs_register_typed_name"  # the name the user typed, if any
SHOWN_METRICS = ("r2", "rmse", "mae")
VERDICT_KEY = "runs_promotion_verdict"  # the last Register's verdict: what for, the verdict, its outcome

st.title("Runs")
uri = common.settings().effective_tracking_uri


def _day_bounds(dates: object) -> tuple[datetime | None, datetime | None]:
    """(since, until) in UTC from the date range widget (until is the end of the last day)."""
    if not isinstance(dates, (tuple, list)) or not dates:
        return None, None
    since = datetime.combine(dates[0], time.min, tzinfo=UTC)
    last = dates[1] if len(dates) > 1 else dates[0]
    return since, datetime.combine(last, time.min, tzinfo=UTC) + timedelta(days=1)


def _registry_name(row: dict) -> str:
    text = f"{row.get(TAG_DATASET) or 'model'}-{row.get(TAG_MODEL) or ''}"
    return re.sub(r"[^\w\-]+", "-", text).strip("-")


def _follow_run(suggested: str) -> None:
    """The name field shows ``suggested`` (the chosen run's name) until the user types their own.

    What the user typed is kept apart from the widget: Streamlit forgets a widget's value while no run
    is ticked (the field is not shown). Clearing the field makes it follow the runs again.
    """
    current = st.session_state.get(NAME_KEY)
    if current is not None and current != st.session_state.get(AUTO_NAME_KEY):
        st.session_state[TYPED_NAME_KEY] = current
    value = st.session_state.get(TYPED_NAME_KEY) or suggested
    if current != value:
        st.session_state[NAME_KEY] = value
    st.session_state[AUTO_NAME_KEY] = suggested


def _keep_selection(key: str, run_ids: list[str]) -> None:
    """Keep a table's ticked rows on the same runs when its rows changed (a new run, another page)."""
    ids_key = f"{key}_ids"
    before, state = st.session_state.get(ids_key), st.session_state.get(key)
    if before is not None and before != run_ids and state is not None:
        chosen = {before[i] for i in state["selection"]["rows"] if i < len(before)}
        st.session_state[key] = {"selection": {"rows": [i for i, r in enumerate(run_ids) if r in chosen]}}
    st.session_state[ids_key] = run_ids


def _shown_name(name: str, trials: object, trial: object) -> str:
    """A run's name in the table: '<n> trials · name' for a sweep, 'trial <k> · name' for a trial."""
    if pd.notna(trials):
        return f"{int(trials)} trials · {name}"
    if pd.notna(trial):
        return f"trial {int(trial)} · {name}"
    return name


def _selectable_table(frame: pd.DataFrame, key: str, exp_id: str, sort_by: str) -> list[str]:
    """The runs as a table whose rows can be ticked; the ticked runs' ids."""
    run_ids = list(frame["run_id"])
    _keep_selection(key, run_ids)
    # The name column says what a row is (a sweep and its trial count, a trial's number): one column
    # less keeps the table within 1440 px.
    names = [_shown_name(name, n, t)
             for name, n, t in zip(frame["run_name"], frame["trials"], frame["trial"], strict=True)]
    table = frame.assign(run_name=names, mlflow=[common.mlflow_run_url(exp_id, rid) for rid in run_ids])
    metrics = [m for m in (*SHOWN_METRICS, sort_by) if m in frame.columns and m != NEWEST]
    metrics = list(dict.fromkeys(metrics))
    event = st.dataframe(
        table, key=key, hide_index=True, on_select="rerun", selection_mode="multi-row",
        column_order=["run_name", "mlflow", *metrics, TAG_MODEL, TAG_DATASET, TAG_SOURCE, "status",
                      "start_time"],
        column_config={
            "run_name": st.column_config.TextColumn("run", width=230, pinned=True,
                                                    help="A sweep's metrics are its best trial's"),
            "mlflow": st.column_config.LinkColumn("MLflow", display_text="open", width=55),
            TAG_MODEL: st.column_config.TextColumn("model", width=105),
            TAG_DATASET: st.column_config.TextColumn("dataset", width=110),
            TAG_SOURCE: st.column_config.TextColumn("source", width=58),
            "status": st.column_config.TextColumn("status", width=78),
            "start_time": st.column_config.DatetimeColumn("started (UTC)", format="MMM D, HH:mm", width=100),
            **{m: st.column_config.NumberColumn(m, format="%.4f", width=70) for m in metrics},
        },
    )
    return [run_ids[i] for i in event.selection.rows if i < len(run_ids)]


def _compare(frame: pd.DataFrame, params: dict[str, dict[str, str]], selected: list[str]) -> None:
    chosen = frame[frame["run_id"].isin(selected)]
    labels = {row["run_id"]: runs.run_label(row) for row in chosen.to_dict("records")}
    metrics = [m for m in runs.metric_columns(frame.columns[len(runs.BASE_COLUMNS):])
               if chosen[m].notna().any()]
    tabs = st.tabs(["Metrics", "Params diff", "Parallel coordinates"])
    with tabs[0]:
        shown = st.multiselect("Metrics", metrics, default=[m for m in SHOWN_METRICS if m in metrics],
                               key="runs_compare_metrics")
        long = runs.metrics_long(frame, selected, shown)
        if long.empty:
            st.info("The selected runs have none of these metrics.")
        else:
            st.plotly_chart(charts.metric_bars(long), key="runs_chart_metrics")
    with tabs[1]:
        show_all = st.checkbox("Show params that are equal too", key="runs_params_all")
        diff = runs.params_diff({rid: params.get(rid, {}) for rid in selected}, labels,
                                only_different=not show_all)
        if diff.empty:
            st.info("The selected runs have the same params.")
        else:
            st.dataframe(diff, key="runs_params_table")
    with tabs[2]:
        parallel = runs.parallel_frame(frame, params, selected)
        if len(parallel.columns) <= 1:
            st.info("The selected runs share no parameter that differs and have no metric to plot.")
        else:
            st.plotly_chart(charts.parallel_coordinates(parallel), key="runs_chart_parallel")


def _register(run_id: str, name: str, alias: str) -> None:
    """Register without an alias: nothing moves, so there is nothing for the gate to judge."""
    with common.user_errors("Registration failed"):
        done = runs.register_model(common.client(), run_id, name, alias or None)
        common.clear_run_caches()
        _show_registration(done.message(), done.name, done.version, done.alias,
                           done.created or done.alias_moved)


def _show_registration(message: str, name: str, version: str, alias: str | None, changed: bool) -> None:
    if alias:
        message += f" Predict with `{name}@{alias}`."
    (st.success if changed else st.info)(message)
    st.link_button("Open the model version in MLflow", common.mlflow_model_url(name, version))


def _decide(verdict: promotion.Verdict, force: bool) -> promotion.Outcome:
    """Act on the verdict (register, verdict run, tags, alias) and count it on this process's /metrics."""
    outcome = promotion.decide(common.client(), common.settings(), verdict, force=force)
    common.clear_run_caches()
    counter = common.runtime().promotions
    if outcome.verdict_run_id and counter is not None:
        counter.observe(outcome.verdict_run_id, outcome.result)
    return outcome


def _gate(run_id: str, name: str, alias: str) -> None:
    """Register pressed with an alias: the verdict first; a losing candidate is refused (and recorded) at
    once, a winning one waits for "Promote to champion"."""
    st.session_state.pop(VERDICT_KEY, None)
    with common.user_errors("Registration failed"), \
            st.spinner("Scoring the candidate and the champion on the same held-out rows…"):
        verdict = promotion.evaluate(common.client(), run_id, name, alias)
        state = {"target": (run_id, name.strip(), alias), "verdict": verdict, "outcome": None}
        if verdict.already or not verdict.won:
            state["outcome"] = _decide(verdict, force=False)
        st.session_state[VERDICT_KEY] = state


def _verdict_panel(run_id: str, name: str, alias: str) -> None:
    """The verdict of the last Register for this run, name and alias: both scores, rows, margin, buttons."""
    state = st.session_state.get(VERDICT_KEY)
    if not state or state["target"] != (run_id, name.strip(), alias):
        return
    verdict, outcome = state["verdict"], state["outcome"]
    if outcome is not None and outcome.result == "unchanged":
        _show_registration(outcome.message(), verdict.name, outcome.registration.version, verdict.alias,
                           False)
        return
    with st.container(border=True, key="runs_verdict"):
        st.markdown(f"**Promotion gate** · `{verdict.name}@{verdict.alias}`")
        cols = st.columns(4)
        cols[0].metric(f"Candidate {verdict.metric}", f"{verdict.candidate_score:.4f}")
        champion = f"Champion {verdict.metric}" + (f" (v{verdict.champion_version})"
                                                  if verdict.champion_version else "")
        cols[1].metric(champion, f"{verdict.champion_score:.4f}" if verdict.comparable
                       else "none yet" if verdict.champion_version is None else "not scored")
        cols[2].metric("Margin", f"{verdict.margin:+.4f}" if verdict.margin is not None else "–",
                       help=f"{'Higher' if promotion.HIGHER_IS_BETTER[verdict.metric] else 'Lower'} "
                            f"{verdict.metric} is better; the candidate must beat the champion.")
        cols[3].metric("Held-out rows", f"{verdict.rows:,}", help=verdict.held_out)
        st.caption((f"Both scored on the same rows: {verdict.held_out}." if verdict.comparable
                    else f"Rows: {verdict.held_out}.")
                   + (f" {verdict.note[0].upper()}{verdict.note[1:]}." if verdict.note else ""))
        if outcome is None:
            st.success(f"{verdict.outcome()[0].upper()}{verdict.outcome()[1:]}: promote it to move "
                       f"@{verdict.alias}.")
        elif outcome.result == "refused":
            st.warning(outcome.message())
        else:
            _show_registration(outcome.message(), verdict.name, outcome.registration.version, verdict.alias,
                               True)
            return
        buttons = st.columns([1.3, 1.3, 4])
        promote = buttons[0].button(f"Promote to {verdict.alias}", key="runs_promote_button", type="primary",
                                    disabled=outcome is not None)
        force = buttons[1].button("Promote anyway", key="runs_promote_force", disabled=outcome is None)
        buttons[2].caption("Nothing has moved yet." if outcome is None else
                           "The refusal is recorded in the promotions experiment; promoting anyway is "
                           "recorded as forced.")
    if promote or force:
        with common.user_errors("Promotion failed"):
            decided = _decide(verdict, force=force)
            if outcome is not None and outcome.registration.created:  # the refusal added the version
                decided = replace(decided, registration=replace(decided.registration, created=True))
            state["outcome"] = decided
            st.rerun()


def _register_section(frame: pd.DataFrame, selected: list[str]) -> None:
    """Register the ticked run (a ticked sweep registers its best trial)."""
    st.subheader("Register a model")
    st.caption("With an alias, Register first scores the run and the alias's current version on the same "
               "held-out rows (the promotion gate); the alias moves only when you promote.")
    rows = {row["run_id"]: row for row in frame.to_dict("records")}
    targets: dict[str, str] = {}  # run to register -> label
    for rid in selected:
        row = rows[rid]
        if isinstance(row.get("best_run_id"), str):
            targets[row["best_run_id"]] = f"best trial of {runs.run_label(row)}"
        elif row["status"] == "FINISHED":
            targets[rid] = runs.run_label(row)
    if not targets:
        st.info("Tick a finished run in the table to register its model." if not selected
                else "None of the ticked runs finished: tick a finished run to register its model.")
        return
    run_id = st.selectbox("Run", list(targets), key="runs_action_run", format_func=targets.__getitem__)
    source_row = rows.get(run_id) or next(r for r in rows.values() if r.get("best_run_id") == run_id)
    _follow_run(_registry_name(source_row))
    cols = st.columns([3, 2, 1], vertical_alignment="bottom")
    name = cols[0].text_input("Registered model name", key=NAME_KEY,
                              help="Follows the chosen run until you type your own name.")
    alias = cols[1].text_input("Alias", "champion", key="runs_register_alias",
                               help="Letters, digits, '_' and '-', e.g. champion or challenger.")
    # No help tooltip on these buttons: Streamlit then draws each button twice in its container.
    if cols[2].button("Register", key="runs_register_button", type="primary"):
        if alias.strip():
            _gate(run_id, name, alias.strip())
        else:
            _register(run_id, name, "")
    _verdict_panel(run_id, name, alias.strip())


with common.user_errors():
    names = common.experiment_names(uri)
    if not names:
        st.info("No experiment yet: train a model on the Train page.")
        st.stop()
    default_exp = names.index(DEFAULT_EXPERIMENT) if DEFAULT_EXPERIMENT in names else 0
    experiment = st.selectbox("Experiment", names, index=default_exp, key="runs_experiment")

    seen: set[str] = st.session_state.setdefault(SEEN_KEY, set())
    filters = st.columns([2, 2, 1.3, 2.8, 1.6, 1])
    dataset_options = [ALL, *sorted(set(BUILTINS) | seen)]
    dataset = filters[0].selectbox("Dataset", dataset_options, key="runs_dataset", accept_new_options=True)
    model = filters[1].selectbox("Model", [ALL, *CATALOG], key="runs_model")
    source = filters[2].selectbox("Source", [ALL, *SOURCES], key="runs_source")
    dates = filters[3].date_input("Started (UTC, from - to)", value=(), key="runs_dates")
    seen_metrics: set[str] = st.session_state.setdefault(SEEN_METRICS_KEY, set())
    sort_options = [NEWEST, *runs.METRIC_ORDER, *sorted(seen_metrics - set(runs.METRIC_ORDER))]
    sort_by = filters[4].selectbox("Sort by", sort_options, key="runs_sort",
                                   format_func=lambda s: "start time" if s == NEWEST else s)
    limit = filters[5].selectbox("Per page", runs.PAGE_SIZES, key="runs_limit")
    toggles = st.columns([1, 1.6, 3.4])
    ascending = toggles[0].toggle("Ascending", key="runs_ascending")
    show_trials = toggles[1].toggle("Show sweep trials", key="runs_show_trials",
                                    help="Off: each sweep is one row with its best trial's metrics; tick it "
                                         "to see its trials.")
    since, until = _day_bounds(dates)
    query = {"dataset": None if dataset == ALL else dataset, "model": None if model == ALL else model,
             "source": None if source == ALL else source, "trials": show_trials,
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
        if len(tokens) > 1 and st.button("First page", key="runs_first_page"):
            st.session_state[TOKENS_KEY] = [None]
            st.rerun()
        st.stop()
    exp_id = runs.experiment_id(common.client(), experiment) or "0"
    selected = _selectable_table(frame, TABLE_KEY, exp_id, sort_by)
    nav = st.columns([1, 1, 6])
    if nav[0].button("First page", key="runs_first_page", disabled=len(tokens) == 1):
        st.session_state[TOKENS_KEY] = [None]
        st.rerun()
    if nav[1].button("Next page", key="runs_next_page", disabled=page.next_token is None):
        tokens.append(page.next_token)
        st.rerun()
    nav[2].caption(f"Page {len(tokens)} · {len(frame)} run(s)"
                   + (" · more on the next page" if page.next_token else "")
                   + " · tick rows to compare or register them")

    params = dict(page.params)
    sweeps = frame[frame["run_id"].isin(selected) & frame["trials"].notna()]
    if len(sweeps) == 1:
        sweep = sweeps.iloc[0]
        metric = sweep["score_metric"] if isinstance(sweep["score_metric"], str) else NEWEST
        trials = common.runs_page(uri, experiment, parent=sweep["run_id"], sort_by=metric,
                                  ascending=not runs.HIGHER_IS_BETTER.get(metric, True), max_results=1000)
        st.subheader(f"Trials of {sweep['run_name']}")
        st.caption(f"{len(trials.frame)} trial(s), best {metric} first · tick trials to compare or "
                   "register them")
        if not trials.frame.empty:
            selected += _selectable_table(trials.frame, TRIALS_KEY, exp_id, metric)
            frame = pd.concat([frame, trials.frame], ignore_index=True).drop_duplicates("run_id")
            params.update(trials.params)
    elif len(sweeps) > 1:
        st.caption("Tick a single sweep to list its trials.")

    st.subheader("Compare")
    if len(selected) >= 2:
        _compare(frame, params, selected)
    else:
        st.caption("Tick two or more rows to compare them.")
    _register_section(frame, selected)

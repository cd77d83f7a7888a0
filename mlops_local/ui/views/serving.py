"""Serving: which model the model service answers with (Reload), and its traffic, latency, errors,
predictions and input drift from Prometheus, with the same PromQL as the dashboard's Serving row."""

from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from mlops_local.background import start_once
from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.metrics.export import parse_duration
from mlops_local.metrics.panels import render_expr, render_legend
from mlops_local.metrics.serving_panels import (
    DRIFT_WAITING_EXPR,
    PSI_ALERT,
    PSI_WARN,
    SERVING_JOB,
    bucket_counts,
    get_serving_panel,
    training_shares,
)
from mlops_local.serving.drift import MIN_ROWS, ROWS_PER_DEGREE
from mlops_local.serving.info import DOWN, NO_MODEL, SERVING, ServiceInfo, request_reload, service_info
from mlops_local.serving.metrics import LATENCY_BUCKETS, PREDICTION_QUANTILES
from mlops_local.serving.replay import apply_shifts, parse_shift
from mlops_local.ui import charts, common
from mlops_local.ui.traffic import DURATION_S, TrafficJob, training_rows

RANGES = {"15m": "last 15 minutes", "1h": "last hour", "6h": "last 6 hours", "24h": "last 24 hours",
          "7d": "last 7 days"}
MAX_POINTS = 300  # per series on a chart
RELOAD_KEY = "serving_reload_result"
TRAFFIC_KEY = "serving_traffic_job"
POLL_SECONDS = 0.5
NO_SHIFT = "(no shift)"
# y axes by the panel's Grafana unit (a flat zero line would otherwise get a -1..1 axis)
UNIT_AXES = {"reqps": {"title_text": "requests per second", "rangemode": "nonnegative"},
             "s": {"title_text": "seconds", "rangemode": "nonnegative"},
             "percentunit": {"title_text": "share failed", "tickformat": ".1%", "rangemode": "nonnegative"}}

st.title("Serving")
settings = common.settings()
st.caption(f"The model service (`mlops-local serve model`) at "
           f"[{settings.serve_url}]({settings.serve_url}/version) answers "
           f"`POST /invocations` with `models:/<name>@{settings.serve_alias}`.")


def _reload() -> None:
    swapped, message = request_reload(settings.serve_url)
    st.session_state[RELOAD_KEY] = (swapped, message)


def _service(info: ServiceInfo) -> None:
    if info.state == DOWN:
        st.warning(f"The model service is not running at {settings.serve_url} ({info.detail}). Start it "
                   "with `mlops-local serve model` (it is the Procfile's `model:` line, so `bin/start` runs "
                   "it), or check MLOPS_SERVE_PORT.")
        return
    if info.state == NO_MODEL:
        which = f"registered model {info.model!r}" if info.model else "registered model"
        st.info(f"The model service is up but has no model yet: no {which} has the alias "
                     f"'{info.alias}'. Register a run with that alias on the **Runs** page (tick it, then "
                     f"Register); the service takes it within {settings.serve_poll_interval:g} s, or "
                     "press Reload.")
    else:
        body = info.version
        version = str(body.get("version", ""))
        cards = st.columns([4, 1, 2, 2])  # the name is the long one
        cards[0].metric("Model", info.model or "", help=info.model, border=True)
        cards[1].metric("Version", version, border=True)
        cards[2].metric("Alias", info.alias, border=True)
        day, _, clock = str(body.get("loaded_at", "")).rstrip("Z").partition("T")
        cards[3].metric("Loaded at (UTC)", clock, help=f"{day} {clock} UTC", border=True)
        link = common.mlflow_model_url(info.model or "", version)
        st.caption(f"[Model version in MLflow]({link}) · run `{body.get('run_id', '')}` · loaded {day} · "
                   f"prediction buckets: {body.get('prediction_buckets')}")
    st.button("Reload", key="serving_reload", on_click=_reload,
              help=f"Re-check where the alias '{info.alias}' points now and load a moved version "
                   f"(the service also checks every {settings.serve_poll_interval:g} s).")
    done = st.session_state.pop(RELOAD_KEY, None)
    if done:
        swapped, message = done
        (st.success if swapped else st.info)(f"Reload: {message}")


@st.cache_data(ttl=600, show_spinner="Loading the training rows…", max_entries=4)
def _training_rows(tracking_uri: str, run_id: str) -> tuple[pd.DataFrame | None, str]:
    """The served run's training inputs (for sample traffic), cached per run."""
    return training_rows(common.client().get_run(run_id).data.params)


def _traffic_progress() -> None:
    job: TrafficJob | None = st.session_state.get(TRAFFIC_KEY)
    if job is None:
        return
    progress = job.progress
    sent = f"{progress.sent:,} requests sent, {progress.ok:,} answered, {progress.failed:,} failed" \
        if progress else "starting…"
    if job.running:
        st.progress(job.fraction(), text=f"Sending sample traffic: {job.elapsed():.0f} of "
                                         f"{job.duration_s:.0f} s · {sent}")
        return
    if job.error:
        st.error(job.error)
    elif job.result is not None:
        result = job.result
        how = "stopped after" if result.stopped else "in"
        note = f" Last failure: {result.last_error}" if result.failed and result.last_error else ""
        reached = result.sent / result.elapsed if result.elapsed else 0.0
        if reached < 0.9 * job.rate and not result.stopped:  # one request at a time: a slow service caps it
            note += (f" That is {reached:.1f} requests/s of the {job.rate:g} asked: each request waits "
                     "for the previous answer, and the service answered slower than that.")
        (st.warning if result.failed else st.success)(
            f"Sample traffic {how} {result.elapsed:.0f} s: {result.sent:,} requests, {result.ok:,} answered, "
            f"{result.failed:,} failed ({result.rows:,} rows scored).{note}")
    if st.session_state.pop("serving_traffic_was_running", False):
        st.rerun()  # the charts below now include the whole replay


def _traffic(info: ServiceInfo) -> None:
    job: TrafficJob | None = st.session_state.get(TRAFFIC_KEY)
    running = job is not None and job.running
    with st.expander("Send sample traffic", expanded=running or job is not None):
        if info.state != SERVING:
            st.caption("Sample traffic needs a served model (see above).")
            return
        with common.user_errors("Sample traffic"):
            frame, source = _training_rows(common.settings().effective_tracking_uri,
                                           str(info.version.get("run_id", "")))
            if frame is None:
                st.info(f"No sample rows: {source}.")
                return
            numeric = [str(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
            st.caption(f"Replays rows of {source} (the served model's training data, shuffled) to the "
                       f"service for {DURATION_S:g} s, like `mlops-local replay`; shift a column to see its "
                       "PSI rise.")
            cols = st.columns([1, 1, 2, 1])
            rate = cols[0].number_input("Requests per second", 1, 200, 20, step=1, key="serving_traffic_rate")
            batch = cols[1].number_input("Rows per request", 1, 100, 5, step=1, key="serving_traffic_batch",
                                         help=f"PSI needs {MIN_ROWS} rows in the drift window: a few rows "
                                              "per request get there even when the service is slow.")
            column = cols[2].selectbox("Shift a column", [NO_SHIFT, *numeric], key="serving_traffic_column")
            factor = cols[3].number_input("× factor", 0.0, 1000.0, 1.3, step=0.1, format="%g",
                                          key="serving_traffic_factor", disabled=column == NO_SHIFT)
            if st.button(f"Send {DURATION_S:g} s of traffic", key="serving_traffic_send", type="primary",
                         disabled=running):
                shifts = () if column == NO_SHIFT else (parse_shift(f"{column}=*{factor:g}"),)
                apply_shifts(frame.head(1), shifts)  # a shift that does not fit is refused before sending
                _, started = start_once(st.session_state, TRAFFIC_KEY, TrafficJob, lambda: TrafficJob(
                    url=settings.serve_url, frame=frame, rate=float(rate), duration_s=DURATION_S,
                    batch=int(batch), shifts=shifts))
                if not started:
                    raise UserError("sample traffic is already running in this tab")
                st.session_state["serving_traffic_was_running"] = True
                st.rerun()
        st.fragment(_traffic_progress, run_every=POLL_SECONDS if running else None)()
        if running:  # outside the fragment: a button redrawn twice a second is hard to click
            st.button("Stop", key="serving_traffic_stop", on_click=job.stop_event.set)


def _value(expr: str) -> float | None:
    samples = [s.value for s in common.prometheus().query(expr) if math.isfinite(s.value)]
    return sum(samples) if samples else None


def _now_cards() -> None:
    """The last minute in numbers (the charts below show the chosen range)."""
    rate = _value(render_expr(get_serving_panel("serving_requests")))
    latency = {s.labels.get("quantile"): s.value
               for s in common.prometheus().query(get_serving_panel("serving_latency").expr)}
    failed = _value(get_serving_panel("serving_errors").expr)
    cards = st.columns(5)
    cards[0].metric("Requests/s (last minute)", f"{rate:.2f}" if rate is not None else "–", border=True)
    for card, name in zip(cards[1:4], ("p50", "p95", "p99"), strict=True):
        value = latency.get(name)
        shown = f"{value * 1000:.1f} ms" if value is not None and math.isfinite(value) else "–"
        if value is not None and value >= LATENCY_BUCKETS[-1]:  # in the +Inf bucket: only a bound is known
            shown = f"≥ {LATENCY_BUCKETS[-1] * 1000:.0f} ms"
        card.metric(f"Latency {name}", shown, border=True)
    cards[4].metric("Failed (last minute)", f"{failed:.1%}" if failed is not None else "–", border=True)


def _chart(panel_id: str, start: float, end: float, step: float, empty: str, top: int | None = None) -> None:
    """A range chart of a serving panel; with ``top``, only the series with the highest last values
    (one distinct colour each, instead of repeating colours past eight series)."""
    panel = get_serving_panel(panel_id)
    series = common.prometheus().query_range(render_expr(panel), start, end, step)
    frame = charts.range_frame(panel, series).dropna(subset=["value"])
    if frame.empty:
        st.caption(f"{panel.title}: {empty}")
        return
    title = panel.title
    last = frame.sort_values("time").groupby("series")["value"].last()
    if top is not None and len(last) > top:
        keep = set(last.nlargest(top).index)
        frame = frame[frame["series"].isin(keep)]
        title = f"{panel.title} (the {top} highest of {len(last)})"
    # Rates, latencies and shares read from 0; PSI against its threshold lines.
    include = [t.value for t in panel.thresholds if t.value is not None]
    fig = charts.timeseries(frame, title, start, end, include=[0.0, *include] if panel.unit in UNIT_AXES
                            else include)
    fig.update_yaxes(**UNIT_AXES.get(panel.unit, {}))
    for threshold in panel.thresholds:
        if threshold.value is not None:
            fig.add_hline(y=threshold.value, line_dash="dash", line_color="grey")
    st.plotly_chart(fig, key=f"serving_chart_{panel_id}")


def _predictions(info: ServiceInfo, range_key: str) -> None:
    panel = get_serving_panel("serving_predictions")
    cumulative = {float(s.labels["le"]): s.value
                  for s in common.prometheus().query(render_expr(panel, {"__range": range_key}))
                  if "le" in s.labels and math.isfinite(s.value)}
    buckets = bucket_counts(cumulative)
    total = sum(count for _, count in buckets)
    if total <= 0:
        st.caption(f"{panel.title}: no predictions in this range.")
        return
    source = str(info.version.get("prediction_buckets", ""))
    finite = sum(1 for bound in cumulative if math.isfinite(bound))
    reference = training_shares(finite, PREDICTION_QUANTILES) if source.startswith("training") else None
    st.plotly_chart(charts.bucket_shares([label for label, _ in buckets], [c / total for _, c in buckets],
                                         reference), key="serving_chart_predictions")
    if reference:
        note = "grey bars: the training target's share per bucket (the bounds are its quantiles)"
    elif info.state != SERVING:
        note = "no training reference: the model service is not serving, so which buckets it used is unknown"
    else:
        note = ("no training reference: the buckets are the defaults (the served run did not train on a "
                "built-in dataset) or the model changed in this range")
    st.caption(f"{total:,.0f} predictions in the range; {note}.")


def _waiting_note(waiting: dict[str, float], window: float | None) -> str:
    """Which features have too few rows for their bins yet, and from how many rows each is shown."""
    by_rows: dict[float, list[str]] = {}
    for name, need in sorted(waiting.items()):
        by_rows.setdefault(need, []).append(name)
    parts = "; ".join(f"{', '.join(names)} from {need:,.0f} rows" for need, names in sorted(by_rows.items()))
    held = f"the window holds {window:,.0f} rows" if window is not None else "the window is filling"
    return (f"Not enough rows yet for {len(waiting)} feature(s) ({held}): {parts}. A feature's PSI is shown "
            f"from {ROWS_PER_DEGREE} rows per bin after its first (at least {MIN_ROWS}): on fewer rows "
            "undrifted traffic already scores near the 0.25 line.")


def _drift(range_key: str) -> None:
    prom = common.prometheus()
    panel = get_serving_panel("serving_feature_psi")
    values = [(render_legend(panel, s.labels), s.value)
              for s in prom.query(render_expr(panel, {"__range": range_key})) if math.isfinite(s.value)]
    waiting = {s.labels.get("feature", ""): s.value for s in prom.query(DRIFT_WAITING_EXPR)
               if math.isfinite(s.value)}
    shown = {name for name, _ in values}
    waiting = {name: need for name, need in waiting.items() if name not in shown}  # range: may be older
    prediction = _value(render_expr(get_serving_panel("serving_prediction_psi")))
    window = _value(render_expr(get_serving_panel("serving_drift_window")))
    if not values:
        if window:
            st.info(f"No drift data yet: the drift window holds {window:,.0f} rows; a feature's PSI is "
                    f"exported from {MIN_ROWS} rows on, more for features with many bins (fewer rows make "
                    "it noise). Send some traffic above.")
            if waiting:
                st.caption(_waiting_note(waiting, window))
        else:
            st.info("No drift data yet: the model service exports `mlops_feature_drift_psi` once it has "
                    "scored rows of a model whose training logged a reference profile (models trained "
                    "before drift tracking have none; train and register again). Send some traffic above.")
        return
    cards = st.columns(3)
    cards[0].metric("Prediction drift (PSI)", f"{prediction:.3f}" if prediction is not None else "–",
                    border=True)
    cards[1].metric("Drift window (rows)", f"{window:,.0f}" if window is not None else "–", border=True)
    shifted = sum(1 for _, v in values if v >= PSI_ALERT)
    cards[2].metric(f"Features over {PSI_ALERT:g}", f"{shifted} of {len(values)}", border=True,
                    help=f"{len(waiting)} more wait for enough rows" if waiting else None)
    st.plotly_chart(charts.psi_bars(values, PSI_WARN, PSI_ALERT), key="serving_chart_psi")
    st.caption("PSI above what as many undrifted rows score on average (that small-sample bias is "
               "subtracted, clamped at 0).")
    if waiting:
        st.caption(_waiting_note(waiting, window))


def _metrics(info: ServiceInfo) -> None:
    prom = common.prometheus()
    if not prom.ready():
        raise ServiceUnavailable(
            f"Prometheus is not reachable at {settings.prometheus_url}: start it with "
            "`mlops-local serve prometheus` (or `bin/start`), or check MLOPS_PROMETHEUS_PORT.")
    target = next((t for t in prom.targets() if t.job == SERVING_JOB), None)
    if target is None:
        st.warning(f"Prometheus has no scrape job {SERVING_JOB!r}: check the prometheus.yml it runs with.")
    elif target.health != "up":
        st.caption(f"Prometheus' scrape of {target.url} is {target.health}"
                   f"{': ' + target.last_error if target.last_error else ''}.")
    st.subheader("Traffic")
    _now_cards()
    range_key = st.columns([1, 3])[0].selectbox("Time range", list(RANGES), index=0, key="serving_range",
                                                format_func=RANGES.get)
    end = time.time()
    start = end - parse_duration(range_key).total_seconds()
    step = max(settings.scrape_interval, (end - start) / MAX_POINTS)
    left, middle, right = st.columns(3)
    with left:
        _chart("serving_requests", start, end, step, "no requests in this range.")
    with middle:
        _chart("serving_latency", start, end, step, "no requests in this range.")
    with right:
        _chart("serving_errors", start, end, step, "no requests in this range.")
    st.subheader("Predictions")
    _predictions(info, range_key)
    st.subheader("Input drift")
    _drift(range_key)
    _chart("serving_feature_psi_over_time", start, end, step, "no drift data in this range.", top=6)


def _metrics_section(info: ServiceInfo) -> None:
    with common.user_errors():
        _metrics(info)


info = service_info(settings.serve_url)
_service(info)
_traffic(info)
traffic: TrafficJob | None = st.session_state.get(TRAFFIC_KEY)
# While sample traffic runs the numbers and charts follow it (a scrape or two behind).
refresh = max(2.0, 2 * settings.scrape_interval) if traffic is not None and traffic.running else None
st.fragment(_metrics_section, run_every=refresh)(info)

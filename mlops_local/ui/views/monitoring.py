"""Monitoring: Prometheus health, R² and RMSE over time by model, and the CSV export of the metrics."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import streamlit as st

from mlops_local.errors import ServiceUnavailable
from mlops_local.metrics.export import export_csv, parse_duration
from mlops_local.metrics.panels import JOB, get_panel, render_expr
from mlops_local.ui import charts, common
from mlops_local.uris import link_base

RANGES = {"15m": "last 15 minutes", "1h": "last hour", "6h": "last 6 hours", "24h": "last 24 hours",
          "7d": "last 7 days"}
EXPORT_KEY = "monitoring_export_result"
MAX_POINTS = 300  # per series on a chart

st.title("Monitoring")
settings = common.settings()
prom = common.prometheus()


def _auto_step(span: timedelta) -> float:
    """A chart step: at most MAX_POINTS points, never finer than the scrape interval."""
    return max(settings.scrape_interval, span.total_seconds() / MAX_POINTS)


def _targets() -> None:
    targets = prom.targets()
    ours = [t for t in targets if t.job == JOB]
    if not targets:
        st.warning("Prometheus lists no scrape target yet (it may still be starting).")
    elif not ours:
        st.warning(f"Prometheus has no scrape job {JOB!r}: check the prometheus.yml it runs with.")
    for t in ours:
        if t.health == "up":
            last = t.last_scrape[:19].replace("T", " ")
            st.success(f"Scrape target {t.url} is up (last scrape {last} UTC).")
        else:
            st.error(f"Scrape target {t.url} is {t.health}: {t.last_error or 'not scraped yet'}. Is the UI's "
                     f"/metrics endpoint ({settings.metrics_url}) reachable?")
    with st.expander(f"All scrape targets ({len(targets)})"):
        st.dataframe(pd.DataFrame([vars(t) for t in targets]), key="monitoring_targets", hide_index=True)


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 5400 else f"{seconds / 3600:.1f} h ago"


def _alerts() -> None:
    st.subheader("Alerts")
    alerts_page = f"{link_base(settings.prometheus_url)}/alerts"
    alerts = common.alerts_firing(settings.prometheus_url, settings.http_timeout)
    if alerts is None:
        st.caption(f"Prometheus did not list its alerts; see [its alerts page]({alerts_page}).")
        return
    if not alerts:
        st.caption(f"No alert is firing. Rules and pending alerts: [Prometheus alerts]({alerts_page}).")
        return
    st.caption(f"{len(alerts)} firing, worst first. Rules, pending alerts and history: "
               f"[Prometheus alerts]({alerts_page}).")
    now = time.time()
    for alert in alerts:
        with st.container(border=True):
            badge = common.SEVERITY_BADGE.get(alert.severity, "gray")
            since = (f"since {alert.since:%Y-%m-%d %H:%M:%S} UTC ({_ago(now - alert.since.timestamp())})"
                     if alert.since else "")
            st.markdown(f":{badge}-badge[{alert.severity}] **{alert.name}** "
                        f"{'`' + alert.where + '`' if alert.where else ''} {since}")
            # Annotations are plain text: a "$" would start LaTeX in Streamlit's markdown.
            if alert.summary:
                st.markdown(alert.summary.replace("$", "\\$"))
            if alert.action:
                st.caption(f"What to do: {alert.action}".replace("$", "\\$"))


def _latest(models: list[str]) -> None:
    rows: dict[tuple[str, str, str], dict[str, object]] = {}
    for panel_id, column in (("r2_latest", "R²"), ("rmse_latest", "RMSE")):
        for sample in prom.query(render_expr(get_panel(panel_id), {"model": models or None})):
            key = (sample.labels.get("experiment", ""), sample.labels.get("dataset", ""),
                   sample.labels.get("model", ""))
            rows.setdefault(key, dict(zip(("experiment", "dataset", "model"), key, strict=True)))[column] = \
                sample.value
    if not rows:
        st.info("Prometheus has no model metrics yet: train a model on the Train page and wait for a scrape "
                f"(every {settings.scrape_interval:g} s).")
        return
    st.dataframe(pd.DataFrame(list(rows.values())), key="monitoring_latest", hide_index=True,
                 column_config={"R²": st.column_config.NumberColumn(format="%.4f"),
                                "RMSE": st.column_config.NumberColumn(format="%.4f")})


def _chart(panel_id: str, models: list[str], start: float, end: float, step: float) -> None:
    panel = get_panel(panel_id)
    series = prom.query_range(render_expr(panel, {"model": models or None}), start, end, step)
    frame = charts.range_frame(panel, series)
    if frame.empty:
        st.caption(f"{panel.title}: no data in this range.")
        return
    st.plotly_chart(charts.timeseries(frame, panel.title, start, end), key=f"monitoring_chart_{panel_id}")


def _export(start: float, end: float) -> None:
    st.subheader("Export to CSV")
    st.caption(f"Queries Prometheus for the mlops metrics over the chosen range, writes the CSV into "
               f"{settings.exports_dir} and offers it for download.")
    cols = st.columns([1, 1, 4])
    step_text = cols[0].text_input("Step", "15s", key="monitoring_export_step",
                                   help="Time between rows of one series, e.g. 15s, 1m, 5m.")
    cols[1].write("")
    if cols[1].button("Export CSV", key="monitoring_export", type="primary"):
        st.session_state.pop(EXPORT_KEY, None)
        with common.user_errors("Export failed"):
            result = export_csv(prom, settings, start, end, parse_duration(step_text, "step"))
            st.session_state[EXPORT_KEY] = (str(result.path), result.rows)
    done = st.session_state.get(EXPORT_KEY)
    if done:
        path, rows = done
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            st.error(f"The export {path} cannot be read any more: {exc}")
            return
        st.success(f"Wrote {rows:,} rows to {path}.")
        st.download_button("Download the CSV", data, file_name=Path(path).name, mime="text/csv",
                           key="monitoring_download", on_click="ignore")


with common.user_errors():
    if not prom.ready():
        raise ServiceUnavailable(
            f"Prometheus is not reachable at {settings.prometheus_url}: start it with "
            "`mlops-local serve prometheus` (or `bin/start`), or check MLOPS_PROMETHEUS_PORT.")
    st.caption(f"Prometheus at [{settings.prometheus_url}]({settings.prometheus_url}) scrapes "
               f"{settings.metrics_url} every {settings.scrape_interval:g} s.")
    _targets()
    _alerts()
    controls = st.columns([1, 3])
    range_key = controls[0].selectbox("Time range", list(RANGES), index=1, key="monitoring_range",
                                      format_func=RANGES.get)
    model_options = prom.label_values("model", match="mlops_model_r2")
    models = controls[1].multiselect("Models (none = all)", model_options, key="monitoring_models")
    span = parse_duration(range_key)
    end = time.time()
    start = end - span.total_seconds()
    st.subheader("Latest values")
    _latest(models)
    step = _auto_step(span)
    left, right = st.columns(2)
    with left:
        _chart("r2_over_time", models, start, end, step)
    with right:
        _chart("rmse_over_time", models, start, end, step)
    _export(start, end)

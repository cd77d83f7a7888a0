"""Plotly figures for the pages (no Streamlit here, so they are testable and reusable)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mlops_local.metrics.panels import Panel, render_legend
from mlops_local.metrics.promapi import RangeSeries

_HEIGHT = 360
# Distinct hues (Okabe-Ito, readable with colour blindness); no two shades of one colour.
SERIES_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]


def predicted_vs_actual(y_true: Sequence[float], y_pred: Sequence[float],
                        target: str = "target") -> go.Figure:
    """Scatter of predictions against the truth, with the y = x line a perfect model would sit on."""
    actual, predicted = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    fig = px.scatter(x=actual, y=predicted, opacity=0.5,
                     labels={"x": f"actual {target}", "y": f"predicted {target}"},
                     title="Predicted vs actual (test set)")
    both = np.concatenate([actual, predicted])
    both = both[np.isfinite(both)]
    # The data's own range (not from 0: a target of 100 to 500 would fill a fifth of the square).
    low, high = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x",
                             line={"dash": "dash", "color": "grey"}))
    # Square: one unit is as long on both axes over the same range, so y = x is the diagonal.
    pad = (high - low) * 0.03 or 1.0
    fig.update_xaxes(range=[low - pad, high + pad], constrain="domain")
    fig.update_yaxes(range=[low - pad, high + pad], scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_layout(height=_HEIGHT + 160, showlegend=False)
    return fig


def residuals(y_true: Sequence[float], y_pred: Sequence[float]) -> go.Figure:
    """Residuals (actual minus predicted) against the prediction."""
    actual, predicted = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    fig = px.scatter(x=predicted, y=actual - predicted, opacity=0.5,
                     labels={"x": "predicted", "y": "residual (actual - predicted)"}, title="Residuals")
    fig.add_hline(y=0, line_dash="dash", line_color="grey")
    fig.update_layout(height=_HEIGHT)
    return fig


def feature_importance(importance: pd.Series, top: int = 15) -> go.Figure:
    """Horizontal bars of the most important input columns."""
    data = importance.sort_values(ascending=False).head(top).iloc[::-1]
    fig = px.bar(x=data.to_numpy(), y=[str(i) for i in data.index], orientation="h",
                 labels={"x": "importance", "y": ""}, title="Feature importance")
    fig.update_layout(height=max(_HEIGHT, 24 * len(data) + 120))
    return fig


def metric_bars(long: pd.DataFrame) -> go.Figure:
    """One small bar chart per metric, each on its own y axis (R² is not drawn on RMSE's scale);
    one colour per run (input: run, metric, value)."""
    metrics = list(dict.fromkeys(long["metric"]))
    wrap = min(len(metrics), 4)
    fig = px.bar(long, x="run", y="value", color="run", facet_col="metric", facet_col_wrap=wrap,
                 category_orders={"metric": metrics}, facet_col_spacing=0.06, facet_row_spacing=0.12,
                 title="Metrics (one chart per metric, each on its own scale)")
    fig.update_yaxes(matches=None, showticklabels=True, title_text="")
    fig.update_xaxes(showticklabels=False, title_text="")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1], font={"size": 14}))
    rows = -(-len(metrics) // wrap)
    fig.update_layout(height=80 + 240 * rows, legend_title_text="",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.04, "x": 0})
    return fig


def _axis_label(name: str, limit: int = 18) -> str:
    """A parallel-coordinates axis title short enough not to run into its neighbours."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


def parallel_coordinates(frame: pd.DataFrame, color: str = "r2") -> go.Figure:
    """One line per run across the params its runs share and its metrics; text params become ticks."""
    dimensions = []
    for column in frame.columns:
        if column == "run":
            continue
        values = frame[column]
        label = _axis_label(str(column))
        if pd.api.types.is_numeric_dtype(values):
            dimensions.append({"label": label, "values": values.astype(float).to_numpy()})
        else:
            codes, uniques = pd.factorize(values.astype(str))
            dimensions.append({"label": label, "values": codes, "tickvals": list(range(len(uniques))),
                               "ticktext": list(uniques)})
    line: dict[str, object] = {}
    if color in frame.columns and pd.api.types.is_numeric_dtype(frame[color]):
        line = {"color": frame[color].astype(float).to_numpy(), "colorscale": "Viridis", "showscale": True,
                "colorbar": {"title": {"text": color}}}
    fig = go.Figure(go.Parcoords(line=line, dimensions=dimensions, labelangle=-20, labelside="top",
                                 labelfont={"size": 13}, tickfont={"size": 11}))
    fig.update_layout(height=_HEIGHT + 60, title="Parallel coordinates (params the runs share, metrics)",
                      margin={"t": 130, "l": 60, "r": 40, "b": 30})
    return fig


def range_frame(panel: Panel, series: Sequence[RangeSeries]) -> pd.DataFrame:
    """Long frame (time UTC, series name from the panel's legend, value) of a range query."""
    rows = [
        (datetime.fromtimestamp(t, tz=UTC), render_legend(panel, s.labels) or panel.title, v)
        for s in series for t, v in s.points
    ]
    return pd.DataFrame(rows, columns=["time", "series", "value"])


MIN_SPAN_FRACTION = 0.01  # a value axis is at least 1 % of the values' magnitude tall
MARGIN_FRACTION = 0.08  # of the data's span, above and below


def value_range(values: Sequence[float], include: Sequence[float] = ()) -> tuple[float, float] | None:
    """The value axis of a chart of ``values``: their span (with ``include``, e.g. threshold lines) plus a
    margin, at least ``MIN_SPAN_FRACTION`` of their magnitude tall; never below 0 when all are >= 0.

    Plotly (like Grafana's uPlot) pads a flat series by about its own magnitude: R² flat at 0.9967 was
    drawn on a 0-1.5 axis, a stripe where no change between models shows. Fitting the data alone
    would do the opposite and magnify noise of 0.0001 into cliffs: the span floor keeps such a series
    visibly flat while differences of a few thousandths stay readable. None without a finite value.
    """
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None
    points = finite + [float(v) for v in include if np.isfinite(v)]
    low, high = min(points), max(points)
    span = high - low
    magnitude = max(abs(low), abs(high))
    floor = MIN_SPAN_FRACTION * magnitude if magnitude > 0 else 1.0
    pad = max(span * MARGIN_FRACTION, (floor - span) / 2)
    bottom, top = low - pad, high + pad
    if low >= 0 > bottom:  # RMSE, rates, PSI: no negative axis for values that cannot be negative
        bottom = 0.0
    return bottom, top


def timeseries(frame: pd.DataFrame, title: str, start: float | None = None,
               end: float | None = None, include: Sequence[float] = ()) -> go.Figure:
    """Lines over time, one per series, over the whole queried range [start, end] (epoch seconds); the
    value axis fits the values and ``include`` (see :func:`value_range`)."""
    # Explicit colours: Streamlit's theme otherwise pairs dark and light shades of one hue. The legend
    # sits above the plot, clear of the time axis title (below the plot it overlapped it).
    fig = px.line(frame, x="time", y="value", color="series", title=title, markers=len(frame) < 60,
                  color_discrete_sequence=SERIES_COLOURS)
    fig.update_layout(height=_HEIGHT + 40, legend_title_text="", xaxis_title="time (UTC)", yaxis_title="",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
                      title={"y": 0.97, "yanchor": "top"}, margin={"t": 110})
    if start is not None and end is not None:
        fig.update_xaxes(range=[datetime.fromtimestamp(start, tz=UTC),
                                datetime.fromtimestamp(end, tz=UTC)])
    fitted = value_range(frame["value"].tolist(), include)
    if fitted is not None:
        fig.update_yaxes(range=list(fitted))
    return fig


PSI_COLOURS = ("#009E73", "#E69F00", "#D55E00")  # stable, moderate, shifted (Okabe-Ito)


def psi_bars(values: Sequence[tuple[str, float]], warn: float, alert: float) -> go.Figure:
    """Horizontal bars of PSI per feature, largest on top, coloured at the ``warn``/``alert`` lines."""
    data = sorted(values, key=lambda item: item[1])
    colours = [PSI_COLOURS[0] if v < warn else PSI_COLOURS[1] if v < alert else PSI_COLOURS[2]
               for _, v in data]
    fig = go.Figure(go.Bar(x=[v for _, v in data], y=[name for name, _ in data], orientation="h",
                           marker_color=colours, text=[f"{v:.3f}" for _, v in data], textposition="outside",
                           cliponaxis=False, hovertemplate="%{y}: PSI %{x:.4f}<extra></extra>"))
    for line, label in ((warn, f"{warn:g} moderate"), (alert, f"{alert:g} shifted")):
        fig.add_vline(x=line, line_dash="dash", line_color="grey", annotation_text=label,
                      annotation_position="top")
    top = max([alert * 1.2, *(v * 1.15 for _, v in data)])
    fig.update_xaxes(range=[0, top], title_text="PSI (population stability index)")
    fig.update_layout(height=max(_HEIGHT, 28 * len(data) + 140), title="Input drift: PSI per feature",
                      margin={"l": 10, "t": 80}, showlegend=False)
    return fig


def bucket_shares(labels: Sequence[str], served: Sequence[float],
                  reference: Sequence[float] | None) -> go.Figure:
    """Grouped bars: share of predictions per bucket, beside training's share when known."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(served), name="served predictions",
                           marker_color=SERIES_COLOURS[0], hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    if reference is not None:
        fig.add_trace(go.Bar(x=list(labels), y=list(reference), name="training target",
                             marker_color="#999999", hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.update_yaxes(tickformat=".0%", title_text="share of predictions")
    fig.update_xaxes(title_text="predicted value (bucket)")
    fig.update_layout(height=_HEIGHT + 40, barmode="group", title="Prediction distribution against training",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
                      margin={"t": 110})
    return fig

"""Polish the first hour shows: square predicted-vs-actual, readable Monitoring charts, no Deploy button,
no page that only repeats the sidebar."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.colors import hex_to_rgb

from mlops_local.ml.plots import predicted_vs_actual_svg
from mlops_local.services.ui import streamlit_args
from mlops_local.settings import Settings
from mlops_local.ui import charts

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
TARGET = "CO2 Emissions(g/km)"


def _truth_and_predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.normal(250, 60, 200)
    return y, y + rng.normal(0, 10, 200)


def test_predicted_vs_actual_svg_is_square_with_the_target_on_both_axes() -> None:
    root = ET.fromstring(predicted_vs_actual_svg(*_truth_and_predictions(), TARGET))
    plot_area = next(r for r in root.iter(f"{SVG}rect") if r.get("fill") == "none")
    assert float(plot_area.get("width")) == float(plot_area.get("height"))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert f"actual {TARGET}" in texts and f"predicted {TARGET}" in texts


def test_predicted_vs_actual_chart_is_square_with_the_target_on_both_axes() -> None:
    fig = charts.predicted_vs_actual(*_truth_and_predictions(), target=TARGET)
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert tuple(fig.layout.xaxis.range) == tuple(fig.layout.yaxis.range)
    assert fig.layout.xaxis.title.text == f"actual {TARGET}"
    assert fig.layout.yaxis.title.text == f"predicted {TARGET}"


def test_monitoring_series_colours_differ_and_the_legend_clears_the_time_axis_title() -> None:
    series = [f"random_forest · dataset {i}" for i in range(6)]
    frame = pd.DataFrame([(pd.Timestamp(1_700_000_000 + t, unit="s", tz="UTC"), name, 0.9 + t / 1e4)
                          for name in series for t in range(0, 600, 60)], columns=["time", "series", "value"])
    fig = charts.timeseries(frame, "R² over time")
    colours = [trace.line.color for trace in fig.data]
    assert len(colours) == len(series) and all(colours)  # set on the traces: no theme replaces them
    rgb = [np.array(hex_to_rgb(c), dtype=float) for c in colours]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(rgb) for b in rgb[i + 1:])
    assert closest > 60, f"two series colours are hard to tell apart: {colours}"
    legend = fig.layout.legend
    assert fig.layout.xaxis.title.text == "time (UTC)"
    assert legend.yanchor == "bottom" and legend.y >= 1  # above the plot; the axis title is below it


def _r2_frame(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame([(pd.Timestamp(1_700_000_000 + 60 * i, unit="s", tz="UTC"), "ridge", v)
                         for i, v in enumerate(values)], columns=["time", "series", "value"])


def test_a_flat_r2_line_gets_an_axis_around_it_not_a_stripe_on_zero_to_one_and_a_half() -> None:
    fig = charts.timeseries(_r2_frame([0.9967] * 6), "R² over time")
    low, high = fig.layout.yaxis.range
    assert low < 0.9967 < high and abs((low + high) / 2 - 0.9967) < 1e-9  # the line in the middle
    # the span floor: 1 % of the value, so noise of 1e-4 stays flat and 0.001 between models shows
    assert high - low == pytest.approx(0.01 * 0.9967)


def test_the_value_axis_fits_the_data_with_a_margin() -> None:
    low, high = charts.value_range([0.90, 0.95, 0.99])
    assert low == pytest.approx(0.90 - 0.09 * 0.08) and high == pytest.approx(0.99 + 0.09 * 0.08)
    assert charts.value_range([-0.4, 0.98]) == pytest.approx((-0.4 - 1.38 * 0.08, 0.98 + 1.38 * 0.08))
    low, high = charts.value_range([0.002, 3.0, 3.1])  # RMSE: never a negative axis
    assert low == 0.0 and high == pytest.approx(3.1 + 3.098 * 0.08)
    assert charts.value_range([0.0, 0.0]) == (0.0, 0.5)  # all zero: a usable axis, not a point
    assert charts.value_range([0.01, 0.02], include=[0.0, 0.25]) == pytest.approx((0.0, 0.27))
    assert charts.value_range([float("nan")]) is None


def test_a_range_with_only_gaps_leaves_the_axis_to_plotly() -> None:
    frame = _r2_frame([float("nan")] * 3)
    assert charts.timeseries(frame, "R² over time").layout.yaxis.range is None


def test_serve_ui_hides_the_deploy_button() -> None:
    from streamlit import config

    args = streamlit_args(Settings.from_env({}))
    assert args[args.index("--client.toolbarMode") + 1] == "minimal"
    assert config.get_option("client.toolbarMode") is not None  # a real option (a typo raises here)


def test_every_page_is_in_the_readme_and_no_page_repeats_the_sidebar() -> None:
    app = (ROOT / "mlops_local" / "ui" / "app.py").read_text()
    pages = re.findall(r'st\.Page\(PAGES / "(\w+)\.py", title="([^"]+)"', app)
    titles = [title for _, title in pages]
    assert "Services" not in titles  # the sidebar shows every service's state and link
    assert sorted(f"{name}.py" for name, _ in pages) == sorted(
        p.name for p in (ROOT / "mlops_local" / "ui" / "views").glob("*.py"))
    readme = (ROOT / "README.md").read_text()
    assert [title for title in titles if f"**{title}**" not in readme] == []
    assert "**Services**" not in readme

"""The run plots are well-formed SVG showing the data they are given."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_local.ml.plots import PLOT_FILES, _Frame, log_ticks, nice_ticks, write_plots

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.013, 0.87) == [0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(-3.2, 27.9) == [0, 10, 20]
    assert nice_ticks(5, 5) == [5]


def test_three_plots_with_one_dot_per_test_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(200, 40, 300)
    pred = y + rng.normal(0, 5, 300)
    importance = pd.Series([0.6, 0.3, 0.1], index=["Engine Size(L)", "Fuel <Type>", "Cylinders"])
    files = write_plots(tmp_path, y, pred, importance, "impurity", "CO2 Emissions(g/km)")
    assert [f.name for f in files] == list(PLOT_FILES)
    trees = [ET.parse(f).getroot() for f in files]  # parses: well-formed, labels escaped
    assert len(trees[0].findall(f".//{SVG}circle")) == 300
    assert len(trees[1].findall(f".//{SVG}circle")) == 300
    texts = [t.text for t in trees[2].iter(f"{SVG}text")]
    assert "Fuel <Type>" in texts and "Feature importance (impurity)" in texts
    widths = [float(r.get("width")) for r in trees[2].iter(f"{SVG}rect") if r.get("fill") == "#1f77b4"]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0


def test_no_importance_no_third_plot_and_constant_predictions_do_not_break(tmp_path: Path) -> None:
    y = np.arange(20, dtype=float)
    files = write_plots(tmp_path, y, np.full(20, 3.0), None, "", "t")
    assert [f.name for f in files] == list(PLOT_FILES[:2])
    for f in files:
        ET.parse(f)
        assert "nan" not in f.read_text().lower()


@pytest.mark.parametrize("n", [5000])
def test_large_test_sets_are_sampled(tmp_path: Path, n: int) -> None:
    y = np.linspace(0, 1, n)
    files = write_plots(tmp_path, y, y, None, "", "t")
    assert len(ET.parse(files[0]).getroot().findall(f".//{SVG}circle")) == 2000


def test_log_ticks_are_powers_of_ten_with_more_when_few() -> None:
    assert log_ticks(1e-4, 0.5) == [0.0001, 0.001, 0.01, 0.1]
    assert log_ticks(15, 900) == [20, 50, 100, 200, 500]
    assert log_ticks(-1, 5) == nice_ticks(-1, 5)  # not a log range: round linear ticks


def test_frame_log_axis_step_marks_and_legend() -> None:
    frame = _Frame((1, 1000), (0, 1), log_x=True)
    assert frame.px(10) - frame.px(1) == pytest.approx(frame.px(1000) - frame.px(100))
    assert frame.x_ticks() == [1, 10, 100, 1000]
    assert not _Frame((-1, 1000), (0, 1), log_x=True).log_x  # a log axis needs positive values
    frame = _Frame((0, 10), (0, 10))
    frame.axes("t", "x", "y", y_ticks=False, x_ticks=[(0, "zero"), (10, "<ten>")])
    frame.step([0, 5, 10], [1, 4, 9])
    frame.vlines([2, 3], "red", 0.3, cls="marks")
    frame.legend([("dots & <more>", "#1f77b4"), ("line", "line:black")], avoid=[(9, 9), (1, 9), (1, 1)])
    root = ET.fromstring(frame.svg())
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"zero", "<ten>", "dots & <more>", "line"} <= set(texts) and "0" not in texts
    points = root.find(f".//{SVG}polyline").get("points").split()
    assert len(points) == 5 and points[1].split(",")[1] == points[0].split(",")[1]  # held, then up
    assert len(root.findall(f".//{SVG}g[@class='marks']/{SVG}line")) == 2
    box = root.find(f".//{SVG}g[@class='legend']/{SVG}rect")
    assert float(box.get("x")) > frame.px(5) and float(box.get("y")) > frame.py(5)  # lower right, free

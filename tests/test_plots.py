"""The run plots are well-formed SVG showing the data they are given."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_local.ml.plots import PLOT_FILES, nice_ticks, write_plots

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

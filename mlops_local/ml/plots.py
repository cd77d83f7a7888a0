"""Small PNG plots logged with each run: predicted vs actual, residuals, feature importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PLOT_FILES = ("predicted_vs_actual.png", "residuals.png", "feature_importance.png")
_TOP_FEATURES = 20


def _figure_class():
    # Figure without pyplot: no global state, no GUI backend, safe in the UI's threads (renders with Agg).
    from matplotlib.figure import Figure

    return Figure


def write_plots(out_dir: Path, y_true: np.ndarray, y_pred: np.ndarray, importance: pd.Series | None,
                importance_kind: str, target: str) -> list[Path]:
    """Write the plots into ``out_dir``; returns the files written (importance only when known)."""
    figure_cls = _figure_class()
    out_dir.mkdir(parents=True, exist_ok=True)
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    written = []

    # Fixed margins instead of tight_layout: the layout pass costs more than drawing these small plots.
    fig = figure_cls(figsize=(4.5, 4), dpi=72)
    fig.subplots_adjust(left=0.17, right=0.96, bottom=0.13, top=0.92)
    ax = fig.add_subplot()
    ax.plot(y_true, y_pred, "o", markersize=3, alpha=0.5)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    ax.set(xlabel=f"actual {target}", ylabel="predicted", title="Predicted vs actual (test set)")
    ax.locator_params(nbins=5)  # tick labels are most of the drawing time
    written.append(out_dir / PLOT_FILES[0])
    fig.savefig(written[-1])

    fig = figure_cls(figsize=(4.5, 4), dpi=72)
    fig.subplots_adjust(left=0.17, right=0.96, bottom=0.13, top=0.92)
    ax = fig.add_subplot()
    ax.plot(y_pred, y_true - y_pred, "o", markersize=3, alpha=0.5)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (test set)")
    ax.locator_params(nbins=5)
    written.append(out_dir / PLOT_FILES[1])
    fig.savefig(written[-1])

    if importance is not None and len(importance):
        top = importance.head(_TOP_FEATURES)[::-1]
        height = 0.9 + 0.22 * len(top)
        fig = figure_cls(figsize=(6.5, height), dpi=72)
        label_width = min(0.5, 0.08 + 0.011 * max(len(str(i)) for i in top.index))
        fig.subplots_adjust(left=label_width, right=0.97, bottom=0.45 / height, top=1 - 0.35 / height)
        ax = fig.add_subplot()
        ax.barh([str(i) for i in top.index], top.to_numpy(dtype=float))
        ax.set(title=f"Feature importance ({importance_kind})")
        ax.locator_params(axis="x", nbins=4)
        ax.tick_params(axis="y", labelsize=8)
        written.append(out_dir / PLOT_FILES[2])
        fig.savefig(written[-1])
    return written

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

    fig = figure_cls(figsize=(4.5, 4), dpi=80)
    ax = fig.add_subplot()
    ax.scatter(y_true, y_pred, s=8, alpha=0.5)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    ax.set(xlabel=f"actual {target}", ylabel="predicted", title="Predicted vs actual (test set)")
    fig.tight_layout()
    written.append(out_dir / PLOT_FILES[0])
    fig.savefig(written[-1])

    fig = figure_cls(figsize=(4.5, 4), dpi=80)
    ax = fig.add_subplot()
    ax.scatter(y_pred, y_true - y_pred, s=8, alpha=0.5)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (test set)")
    fig.tight_layout()
    written.append(out_dir / PLOT_FILES[1])
    fig.savefig(written[-1])

    if importance is not None and len(importance):
        top = importance.head(_TOP_FEATURES)[::-1]
        fig = figure_cls(figsize=(5.5, 0.8 + 0.25 * len(top)), dpi=80)
        ax = fig.add_subplot()
        ax.barh([str(i) for i in top.index], top.to_numpy(dtype=float))
        ax.set(title=f"Feature importance ({importance_kind})")
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        written.append(out_dir / PLOT_FILES[2])
        fig.savefig(written[-1])
    return written

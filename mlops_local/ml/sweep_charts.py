"""PNG charts logged on a sweep's parent run: score by trial number, and score against each hyperparameter."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from mlops_local.ml.sweep_types import TrialOutcome

SCORE_CHART = "sweep_score_by_trial.png"


def _figure(width: float = 5.5, height: float = 3.6):  # noqa: ANN202
    # Figure without pyplot: no global state, renders with Agg, safe in the UI's threads.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=80)


def _scored(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    return sorted((o for o in outcomes if o.score is not None and math.isfinite(o.score)),
                  key=lambda o: o.number)


def param_chart_name(name: str) -> str:
    """File name of the chart of hyperparameter ``name``."""
    return f"sweep_param_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"


def write_charts(out_dir: Path, outcomes: Sequence[TrialOutcome], score_metric: str,
                 higher_is_better: bool) -> list[Path]:
    """Write the score-by-trial chart and one chart per hyperparameter that varied; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scored = _scored(outcomes)
    written = [_score_by_trial(out_dir / SCORE_CHART, outcomes, scored, score_metric, higher_is_better)]
    names = sorted({k for o in scored for k in o.params})
    for name in names:
        values = [o.params.get(name) for o in scored]
        if len({repr(v) for v in values}) > 1:
            written.append(_param_chart(out_dir / param_chart_name(name), name, values,
                                        [o.score for o in scored], score_metric))  # type: ignore[misc]
    return written


def _score_by_trial(path: Path, outcomes: Sequence[TrialOutcome], scored: list[TrialOutcome],
                    score_metric: str, higher_is_better: bool) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    if scored:
        xs = [o.number for o in scored]
        ys = [float(o.score) for o in scored]  # type: ignore[arg-type]
        ax.scatter(xs, ys, s=18, label="trial")
        running, best = [], None
        for y in ys:
            best = y if best is None else (max(best, y) if higher_is_better else min(best, y))
            running.append(best)
        ax.step(xs, running, where="post", color="black", linewidth=1, label="best so far")
        ax.legend(loc="best", fontsize=8)
    failed = [o.number for o in outcomes if o.status != "FINISHED"]
    for number in failed:
        ax.axvline(number, color="tab:red", alpha=0.3, linewidth=1)
    ax.set(xlabel="trial number", ylabel=score_metric,
           title=f"{score_metric} by trial ({len(scored)} scored, {len(failed)} failed or stopped)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _param_chart(path: Path, name: str, values: list[object], scores: list[float], score_metric: str) -> Path:
    fig = _figure(4.5, 3.4)
    ax = fig.add_subplot()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        xs = [float(v) for v in values]  # type: ignore[arg-type]
        ax.scatter(xs, scores, s=18)
        positive = min(xs) > 0
        if positive and max(xs) / min(xs) > 50:
            ax.set_xscale("log")
    else:
        labels = sorted({str(v) for v in values})
        position = {label: i for i, label in enumerate(labels)}
        ax.scatter([position[str(v)] for v in values], scores, s=18)
        ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=name, ylabel=score_metric, title=f"{score_metric} vs {name}")
    fig.tight_layout()
    fig.savefig(path)
    return path

"""SVG charts logged on a sweep's parent run: score by trial number, and score against each hyperparameter.

Drawn as plain SVG with ``plots._Frame`` (like the per-run plots) rather than with matplotlib: the
charts are written at the end of every sweep, on its critical path, where matplotlib cost ~0.5 s
to import plus ~0.5 s to render them; SVG takes a few ms, is a few KB, and MLflow previews it.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from pathlib import Path

from mlops_local.ml.plots import _DOT, _RIGHT, _Frame
from mlops_local.sweep.spec import TrialOutcome

SCORE_CHART = "sweep_score_by_trial.svg"
_FAILED = "#d62728"
_BASELINE = "#7f7f7f"
_SCORE_SIZE, _PARAM_SIZE = (440, 300), (380, 300)
_LOG_SPAN = 50  # a positive numeric range wider than this factor gets a log x axis
_CHAR_PX = 6.5  # rough width of a tick label character at 11 px
# Characters XML 1.0 cannot hold even escaped (and lone surrogates, which UTF-8 cannot encode).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _scored(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    return sorted((o for o in outcomes if o.score is not None and math.isfinite(o.score)),
                  key=lambda o: o.number)


def _text(value: object) -> str:
    """``str(value)`` safe to put in SVG (``_Frame`` escapes the markup characters)."""
    return _NOT_XML.sub("\ufffd", str(value))


def _is_number(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def param_chart_name(name: str) -> str:
    """File name of the chart of hyperparameter ``name``."""
    return f"sweep_param_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.svg"


def write_charts(out_dir: Path, outcomes: Sequence[TrialOutcome], score_metric: str,
                 higher_is_better: bool, baseline: float | None = None) -> list[Path]:
    """Write the score-by-trial chart and one chart per hyperparameter that varied; returns the files.

    ``baseline``: the default hyperparameters' score, drawn as a dashed line on the score chart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scored = _scored(outcomes)
    if baseline is not None and not math.isfinite(baseline):
        baseline = None
    charts = [(out_dir / SCORE_CHART, _score_by_trial(outcomes, scored, score_metric, higher_is_better,
                                                      baseline))]
    names = sorted({k for o in scored for k in o.params})
    for name in names:
        values = [o.params.get(name) for o in scored]
        if len({repr(v) for v in values}) > 1:
            charts.append((out_dir / param_chart_name(name),
                           _param_chart(name, values, [float(o.score) for o in scored],
                                        score_metric)))
    for path, svg in charts:
        path.write_text(svg, encoding="utf-8")
    return [path for path, _ in charts]


def _integer_ticks(frame: _Frame, minimum: float = -math.inf) -> list[tuple[float, str]] | None:
    """The frame's x ticks without fractions (for trial numbers and int params); None keeps the default."""
    ticks = [(t, str(int(t))) for t in frame.x_ticks() if float(t).is_integer() and t >= minimum]
    return ticks or None


def _score_by_trial(outcomes: Sequence[TrialOutcome], scored: list[TrialOutcome], score_metric: str,
                    higher_is_better: bool, baseline: float | None = None) -> str:
    failed = sorted(o.number for o in outcomes if o.status != "FINISHED")
    xs = [float(o.number) for o in scored]
    ys = [float(o.score) for o in scored]
    numbers_ = xs + [float(n) for n in failed]
    levels = ys + ([baseline] if baseline is not None else [])  # the y axis spans the scores, not from 0
    frame = _Frame((min(numbers_), max(numbers_)) if numbers_ else (0.0, 1.0),
                   (min(levels), max(levels)) if levels else (0.0, 1.0), *_SCORE_SIZE)
    metric = _text(score_metric)
    frame.axes(f"{metric} by trial ({len(scored)} scored, {len(failed)} failed or stopped)",
               "trial number", metric, x_ticks=_integer_ticks(frame, minimum=0))
    if failed:
        frame.vlines(failed, _FAILED, 0.3, cls="failed")
    if baseline is not None:
        y = frame.py(baseline)
        frame.parts.append(f'<g class="baseline"><line x1="{frame.px(frame.x0):.1f}" y1="{y:.1f}" '
                           f'x2="{frame.px(frame.x1):.1f}" y2="{y:.1f}" stroke="{_BASELINE}" '
                           'stroke-dasharray="5,4"/></g>')
    running: list[float] = []
    for y in ys:
        best = y if not running else (max if higher_is_better else min)(running[-1], y)
        running.append(best)
    entries = []
    if scored:
        frame.parts.append('<g class="trials">')
        frame.scatter(xs, ys, r=3, opacity=0.85)
        frame.parts.append('</g><g class="best">')
        frame.step(xs, running)
        frame.parts.append("</g>")
        entries = [("trial", _DOT), ("best so far", "line:black")]
    else:
        frame.note("no scored trials")
    if failed:
        entries.append(("failed or stopped", f"line:{_FAILED}"))
    if baseline is not None:
        entries.append(("default hyperparameters", f"line:{_BASELINE}"))
    along = [] if baseline is None else [(frame.x0 + (frame.x1 - frame.x0) * k / 16, baseline)
                                         for k in range(17)]  # the legend keeps off the baseline too
    frame.legend(entries, avoid=list(zip(xs, ys, strict=True)) + _along_steps(xs, running) + along)
    return frame.svg()


def _along_steps(xs: list[float], ys: list[float], pieces: int = 8) -> list[tuple[float, float]]:
    """Points along the step line, so the legend keeps off it as well as off the dots."""
    points = [(xs[0], ys[0])] if xs else []
    for i in range(1, len(xs)):
        points += [(xs[i - 1] + (xs[i] - xs[i - 1]) * k / pieces, ys[i - 1]) for k in range(1, pieces + 1)]
        points += [(xs[i], ys[i - 1] + (ys[i] - ys[i - 1]) * k / pieces) for k in range(1, pieces + 1)]
    return points


def _category_key(value: object) -> tuple[int, float, str]:
    # Numbers in numeric order first, then everything else (None, strings, bools) by text.
    return (0, float(value), "") if _is_number(value) else (1, 0.0, _text(value))


def _shorten(label: str, room: int) -> str:
    """``label`` cut to ``room`` characters in the middle (values often differ only at the end)."""
    if len(label) <= room:
        return label
    head = (room - 1) // 2
    return label[:head] + "\u2026" + label[len(label) - (room - 1 - head):]


def _param_chart(name: str, values: list[object], scores: list[float], score_metric: str) -> str:
    name, metric = _text(name), _text(score_metric)
    y_range = (min(scores), max(scores))
    if all(_is_number(v) for v in values):
        xs = [float(v) for v in values]
        log = min(xs) > 0 and max(xs) / min(xs) > _LOG_SPAN
        frame = _Frame((min(xs), max(xs)), y_range, *_PARAM_SIZE, log_x=log)
        ints = all(isinstance(v, numbers.Integral) for v in values)
        ticks = _integer_ticks(frame) if ints and not log else None
        xlabel = f"{name} (log scale)" if log else name
    else:
        labels: dict[str, tuple[int, float, str]] = {}
        for v in values:
            labels.setdefault(_text(v), _category_key(v))
        order = sorted(labels, key=lambda label: (labels[label], label))
        position = {label: i for i, label in enumerate(order)}
        xs = [float(position[_text(v)]) for v in values]
        frame = _Frame((-0.5, len(order) - 0.5), y_range, *_PARAM_SIZE)
        room = max(4, int((frame.width - frame.left - _RIGHT) / len(order) / _CHAR_PX) - 1)
        ticks = [(float(i), _shorten(label, room)) for i, label in enumerate(order)]
        xlabel = name
    frame.axes(f"{metric} vs {name}", xlabel, metric, x_ticks=ticks)
    frame.parts.append('<g class="trials">')
    frame.scatter(xs, scores, r=3, opacity=0.85)
    frame.parts.append("</g>")
    return frame.svg()

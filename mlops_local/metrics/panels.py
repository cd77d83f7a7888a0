"""The monitoring panels, defined once: the Streamlit Monitoring page and the Grafana dashboard both
read them, so a chart in the UI and its Grafana twin always run the same PromQL.

Expressions use Grafana's template syntax (``$experiment``, ``$dataset``, ``$model``) inside regex
matchers (``=~``). Grafana substitutes them itself; everything else calls `render_expr`, which
formats values exactly as Grafana's Prometheus datasource does for multi-value variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mlops_local.metrics.promapi import query_range_chunked

if TYPE_CHECKING:
    import pandas as pd

    from mlops_local.metrics.promapi import PrometheusClient

JOB = "mlops-local"  # scrape job name in prometheus.yml
ALL = ".*"  # the regex a variable set to "All" becomes (also the dashboard's allValue)

PanelKind = Literal["stat", "timeseries", "bargauge", "table"]
VariableValue = str | Sequence[str] | None


@dataclass(frozen=True)
class Threshold:
    """A colour step: from ``value`` upwards (None = from minus infinity) the panel is ``color``."""

    value: float | None
    color: str


@dataclass(frozen=True)
class Panel:
    """One chart: title, PromQL with variables, unit (Grafana unit id), legend template, kind."""

    id: str
    title: str
    expr: str
    unit: str
    legend: str
    kind: PanelKind
    description: str = ""
    decimals: int | None = None
    thresholds: tuple[Threshold, ...] = ()
    # stat panels: value -> (text, colour), e.g. {"1": ("UP", "green")}
    value_map: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of the template variables the expression uses, in order of first use."""
        return tuple(dict.fromkeys(m.group(1) or m.group(2) for m in _VAR_RE.finditer(self.expr)))


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable: its values are label values of a metric (chained selectors)."""

    name: str
    label: str
    metric: str  # series selector whose label values are offered, may use earlier variables

    @property
    def query(self) -> str:
        """Grafana's Prometheus variable query, e.g. ``label_values(mlops_model_r2, model)``."""
        return f"label_values({self.metric}, {self.name})"


def _sel(*names: str) -> str:
    return ",".join(f'{name}=~"${name}"' for name in names)


_MODEL_SEL = _sel("experiment", "dataset", "model")

VARIABLES: tuple[Variable, ...] = (
    Variable("experiment", "Experiment", "mlops_model_r2"),
    Variable("dataset", "Dataset", f"mlops_model_r2{{{_sel('experiment')}}}"),
    Variable("model", "Model", f"mlops_model_r2{{{_sel('experiment', 'dataset')}}}"),
)

_R2_STEPS = (Threshold(None, "red"), Threshold(0.5, "orange"), Threshold(0.8, "green"))

PANELS: tuple[Panel, ...] = (
    Panel(
        id="scrape_health", title="Scrape health", kind="stat", unit="none", legend="{{instance}}",
        expr=f'up{{job="{JOB}"}}',
        description="1 when Prometheus scraped the /metrics endpoint of the UI process at its last try.",
        thresholds=(Threshold(None, "red"), Threshold(1, "green")),
        value_map={"0": ("DOWN", "red"), "1": ("UP", "green")},
    ),
    Panel(
        id="r2_latest", title="Latest R² by model", kind="stat", unit="none",
        legend="{{model}} · {{dataset}}",
        expr=f"mlops_model_r2{{{_MODEL_SEL}}}", decimals=3, thresholds=_R2_STEPS,
        description="Test-set R² of the latest finished training of each model on each dataset.",
    ),
    Panel(
        id="rmse_latest", title="Latest RMSE by model", kind="stat", unit="none",
        legend="{{model}} · {{dataset}}", expr=f"mlops_model_rmse{{{_MODEL_SEL}}}", decimals=3,
        description="Test-set RMSE (square root of the MSE, in target units) of the latest training.",
    ),
    Panel(
        id="best_r2", title="Best R² by dataset", kind="stat", unit="none", legend="{{dataset}}",
        expr=f"mlops_best_r2{{{_sel('experiment', 'dataset')}}}", decimals=3, thresholds=_R2_STEPS,
        description="Best test-set R² reached on each dataset, over every model tried.",
    ),
    Panel(
        id="r2_over_time", title="R² over time", kind="timeseries", unit="none",
        legend="{{model}} · {{dataset}}", expr=f"mlops_model_r2{{{_MODEL_SEL}}}", decimals=3,
        description="Latest test-set R² per model and dataset, as scraped over time.",
    ),
    Panel(
        id="rmse_over_time", title="RMSE over time", kind="timeseries", unit="none",
        legend="{{model}} · {{dataset}}", expr=f"mlops_model_rmse{{{_MODEL_SEL}}}", decimals=3,
        description="Latest test-set RMSE per model and dataset, as scraped over time.",
    ),
    Panel(
        id="trainings_per_minute", title="Trainings per minute by status", kind="timeseries", unit="short",
        legend="{{status}}",
        expr=f"sum by (status) (increase(mlops_training_runs_total{{{_sel('dataset', 'model')}}}[1m]))",
        description="Finished trainings in the previous minute, by final status.",
    ),
    Panel(
        id="training_duration", title="Training duration p50 / p95", kind="timeseries", unit="s",
        legend="{{quantile}}",
        expr=(
            'label_replace(histogram_quantile(0.5, sum by (le) (increase('
            f'mlops_training_duration_seconds_bucket{{{_sel("model")}}}[15m]))), "quantile", "p50", "", "")'
            ' or label_replace(histogram_quantile(0.95, sum by (le) (increase('
            f'mlops_training_duration_seconds_bucket{{{_sel("model")}}}[15m]))), "quantile", "p95", "", "")'
        ),
        description="Median and 95th percentile of model fit time over the previous 15 minutes.",
    ),
    Panel(
        id="sync_errors", title="Exporter sync errors", kind="timeseries", unit="short",
        legend="errors in 5 min", expr="sum(increase(mlops_sync_errors_total[5m]))",
        description="Failed incremental syncs of the exporter from MLflow (MLflow down or slow).",
    ),
)

_BY_ID = {panel.id: panel for panel in PANELS}
_VAR_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_LEGEND_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def get_panel(panel_id: str) -> Panel:
    """The panel with this id (KeyError naming the known ids otherwise)."""
    try:
        return _BY_ID[panel_id]
    except KeyError:
        raise KeyError(f"unknown panel {panel_id!r}; known: {', '.join(_BY_ID)}") from None


def _regex_escape(value: str) -> str:
    """A literal value as a regex inside a PromQL double-quoted string (backslashes doubled)."""
    value = value.replace("\\", "\\" * 4)  # literal backslash: \\ in the regex, doubled again
    return re.sub(r"([\^$.|?*+()\[\]{}])", r"\\\\\1", value).replace('"', '\\"')


def format_value(value: VariableValue) -> str:
    """What a variable becomes in a regex matcher: All -> ``.*``, one value, or ``(a|b)``."""
    if value is None or value == ALL or value == "$__all":
        return ALL
    if isinstance(value, str):
        return _regex_escape(value)
    values = list(value)
    if not values or ALL in values or "$__all" in values:
        return ALL
    if len(values) == 1:
        return _regex_escape(values[0])
    return "(" + "|".join(_regex_escape(v) for v in values) + ")"


def render_expr(panel: Panel | str, variables: Mapping[str, VariableValue] | None = None) -> str:
    """The panel's PromQL with variables substituted; a variable not given means All."""
    expr = panel.expr if isinstance(panel, Panel) else panel
    variables = variables or {}
    return _VAR_RE.sub(lambda m: format_value(variables.get(m.group(1) or m.group(2))), expr)


def render_legend(panel: Panel, labels: Mapping[str, str]) -> str:
    """The series name a legend template gives for ``labels`` (as Grafana shows it)."""
    return _LEGEND_RE.sub(lambda m: labels.get(m.group(1), ""), panel.legend).strip(" ·")


def variable_query(variable: Variable, variables: Mapping[str, VariableValue] | None = None) -> str:
    """The series selector whose ``variable.name`` label values to offer, earlier variables applied."""
    return render_expr(variable.metric, variables)


def panel_frame(client: PrometheusClient, panel: Panel, variables: Mapping[str, VariableValue] | None,
                start: float, end: float, step: float) -> pd.DataFrame:
    """A panel's range query as a long frame for a chart: time (UTC), series (legend), value, labels."""
    import pandas as pd

    series, _ = query_range_chunked(client, render_expr(panel, variables), start, end, step)
    rows = [{**s.labels, "series": render_legend(panel, s.labels), "time": t, "value": v}
            for s in series for t, v in s.points]
    frame = pd.DataFrame(rows, columns=None if rows else ["time", "series", "value"])
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    return frame.sort_values(["series", "time"], kind="stable").reset_index(drop=True)


def panel_values(client: PrometheusClient, panel: Panel,
                 variables: Mapping[str, VariableValue] | None = None) -> list[tuple[str, float]]:
    """A stat panel's current values as (legend, value), sorted by legend."""
    samples = client.query(render_expr(panel, variables))
    return sorted((render_legend(panel, s.labels), s.value) for s in samples)

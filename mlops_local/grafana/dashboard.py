"""The Grafana dashboard, generated from the shared panel definitions with grafana-foundation-sdk.

`mlops-local grafana-dashboard` writes it to `dashboards/mlops-local.json` (committed, provisioned by
`serve grafana`); `--check` and the tests fail when the committed file differs from what this
module generates. `validate_dashboard` decodes a dashboard through the SDK's models and checks what
the provisioning relies on (uid, datasource uid, variables, one target per shared panel).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlops_local.errors import UserError
from mlops_local.grafana import DASHBOARD_FILE, DASHBOARD_UID, DATASOURCE_UID
from mlops_local.metrics.panels import ALL, PANELS, VARIABLES, Panel, Variable
from mlops_local.metrics.serving_panels import ALERT_PANELS, ALERTS_ANNOTATION_EXPR, SERVING_PANELS

DASHBOARD_TITLE = "mlops-local"
DATASOURCE_TYPE = "prometheus"
REFRESH = "5s"
GRID_WIDTH = 24

# Width and height (grid units) per panel; panels flow left to right in PANELS order.
SIZES: dict[str, tuple[int, int]] = {
    "scrape_health": (4, 5),
    "best_r2": (6, 5),
    "r2_latest": (7, 5),
    "rmse_latest": (7, 5),
    "serving_up": (4, 5),
    "serving_model": (8, 5),
    "serving_requests": (8, 8),
    "serving_latency": (8, 8),
    "serving_errors": (8, 8),
    "serving_feature_psi_over_time": (24, 8),
}
DEFAULT_SIZE = {"stat": (6, 5), "timeseries": (12, 8), "bargauge": (12, 9), "table": (24, 6)}
# Rows of the dashboard: (row title or None for the first, untitled one, its panels).
SECTIONS: tuple[tuple[str | None, tuple[Panel, ...]], ...] = (
    (None, PANELS), ("Serving", SERVING_PANELS), ("Alerts", ALERT_PANELS))
DASHBOARD_PANELS: tuple[Panel, ...] = tuple(panel for _, panels in SECTIONS for panel in panels)
INSTANT_KINDS = ("stat", "bargauge", "table")
# A histogram's cumulative buckets, shown per bucket: Grafana's "heatmap" format subtracts neighbours.
HEATMAP_PANELS = frozenset({"serving_predictions"})
# Annotations when an alert fires. The SDK's model has no fields for how Grafana titles and tags a
# Prometheus annotation, so they are added to its JSON (Grafana reads these legacy top-level keys).
ALERTS_ANNOTATION_NAME = "Alerts firing"
ANNOTATION_EXTRAS = {"step": "15s", "titleFormat": "{{alertname}}", "tagKeys": "alertname,severity",
                     "textFormat": "{{alertname}} ({{severity}}) firing", "useValueForTime": False}


def _sdk() -> Any:
    try:
        import grafana_foundation_sdk  # noqa: F401  (checks the SDK is importable at all)
    except ImportError:
        raise UserError(
            "generating the Grafana dashboard needs grafana-foundation-sdk: "
            "pip install 'mlops-local[grafana-dev]' (bin/test installs it)"
        ) from None
    from grafana_foundation_sdk.builders import bargauge as bargauge_b
    from grafana_foundation_sdk.builders import common as common_b
    from grafana_foundation_sdk.builders import dashboard as dashboard_b
    from grafana_foundation_sdk.builders import prometheus as prometheus_b
    from grafana_foundation_sdk.builders import stat as stat_b
    from grafana_foundation_sdk.builders import table as table_b
    from grafana_foundation_sdk.builders import timeseries as timeseries_b
    from grafana_foundation_sdk.models import common as common_m
    from grafana_foundation_sdk.models import dashboard as dashboard_m
    from grafana_foundation_sdk.models import prometheus as prometheus_m

    return {"common_b": common_b, "dashboard_b": dashboard_b, "prometheus_b": prometheus_b,
            "stat_b": stat_b, "timeseries_b": timeseries_b, "common_m": common_m,
            "dashboard_m": dashboard_m, "bargauge_b": bargauge_b, "table_b": table_b,
            "prometheus_m": prometheus_m}


def layout(panels: Sequence[Panel] = PANELS) -> Iterator[tuple[Panel, int, int, int, int]]:
    """(panel, x, y, w, h): a left-to-right flow that wraps at the grid's width."""
    x = y = row_height = 0
    for panel in panels:
        w, h = SIZES.get(panel.id, DEFAULT_SIZE[panel.kind])
        if x + w > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        yield panel, x, y, w, h
        x, row_height = x + w, max(row_height, h)


def _datasource(sdk: dict[str, Any]) -> Any:
    return sdk["dashboard_m"].DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


def _variable(sdk: dict[str, Any], variable: Variable) -> Any:
    dm = sdk["dashboard_m"]
    return (
        sdk["dashboard_b"].QueryVariable(variable.name)
        .id(variable.name)  # Grafana keys its variable state by id: keep them distinct
        .label(variable.label)
        .query(variable.query)
        .datasource(_datasource(sdk))
        .multi(True)
        .include_all(True)
        .all_value(ALL)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def _panel(sdk: dict[str, Any], panel: Panel, panel_id: int, grid: tuple[int, int, int, int]) -> Any:
    dm, cm = sdk["dashboard_m"], sdk["common_m"]
    target = (
        sdk["prometheus_b"].Dataquery()
        .expr(panel.expr)
        .legend_format(panel.legend)
        .ref_id("A")
        .datasource(_datasource(sdk))
    )
    target = target.instant() if panel.kind in INSTANT_KINDS else target.range()
    if panel.id in HEATMAP_PANELS:
        target = target.format(sdk["prometheus_m"].PromQueryFormat.HEATMAP)
    elif panel.kind == "table":
        target = target.format(sdk["prometheus_m"].PromQueryFormat.TABLE)
    if panel.kind == "bargauge":
        builder = (
            sdk["bargauge_b"].Panel()
            .reduce_options(sdk["common_b"].ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .orientation(cm.VizOrientation.HORIZONTAL)
            .display_mode(cm.BarGaugeDisplayMode.BASIC)
            .show_unfilled(True)
            .min(0)
        )
    elif panel.kind == "table":
        hidden = {"Time": True, "Value": True, "__name__": True, "alertstate": True}
        builder = (
            sdk["table_b"].Panel()
            .show_header(True)
            .with_transformation(dm.DataTransformerConfig(id_val="organize",
                                                          options={"excludeByName": hidden}))
        )
    elif panel.kind == "stat":
        builder = (
            sdk["stat_b"].Panel()
            .reduce_options(sdk["common_b"].ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .color_mode(cm.BigValueColorMode.VALUE)
            .graph_mode(cm.BigValueGraphMode.NONE)
            .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        )
    else:
        builder = (
            sdk["timeseries_b"].Panel()
            .line_width(2)
            .fill_opacity(10)
            .show_points(cm.VisibilityMode.AUTO)
            .span_nulls(False)
            .legend(sdk["common_b"].VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                    .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
            .tooltip(sdk["common_b"].VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                     .sort(cm.SortOrder.DESCENDING))
        )
    x, y, w, h = grid
    builder = (
        builder.id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .datasource(_datasource(sdk))
        .unit(panel.unit)
        .grid_pos(dm.GridPos(h=h, w=w, x=x, y=y))
        .no_value("no data yet")
        .with_target(target)
    )
    if panel.kind == "table":
        builder = builder.no_value("none firing")
    if panel.decimals is not None:
        builder = builder.decimals(panel.decimals)
    if panel.thresholds:
        steps = [dm.Threshold(value=t.value, color=t.color) for t in panel.thresholds]
        builder = builder.thresholds(
            sdk["dashboard_b"].ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps))
    if panel.value_map:
        options = {value: dm.ValueMappingResult(text=text, color=color, index=i)
                   for i, (value, (text, color)) in enumerate(panel.value_map.items())}
        builder = builder.mappings([dm.ValueMap(options=options)])
    return builder


def _alerts_annotation(sdk: dict[str, Any]) -> Any:
    return (sdk["dashboard_b"].AnnotationQuery().name(ALERTS_ANNOTATION_NAME).datasource(_datasource(sdk))
            .expr(ALERTS_ANNOTATION_EXPR).enable(True).icon_color("red"))


def build_dashboard(sections: Sequence[tuple[str | None, Sequence[Panel]]] = SECTIONS,
                    variables: Sequence[Variable] = VARIABLES) -> Any:
    """The SDK's dashboard model: variables, rows of panels laid out, alert annotations, uid, refresh."""
    sdk = _sdk()
    builder = (
        sdk["dashboard_b"].Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description("Models trained with mlops-local: latest scores, trainings, exporter health. "
                     "Generated by `mlops-local grafana-dashboard`; edit mlops_local/metrics/panels.py.")
        .tags(["mlops-local"])
        .editable()
        .timezone("browser")
        .time("now-1h", "now")
        .refresh(REFRESH)
        .tooltip(sdk["dashboard_m"].DashboardCursorSync.CROSSHAIR)
        # Grafana adds its built-in annotations to this list; ours marks when an alert fires.
        .annotations([_alerts_annotation(sdk)])
    )
    for variable in variables:
        builder = builder.with_variable(_variable(sdk, variable))
    index = top = 0
    for title, panels in sections:
        if title is not None:
            index += 1
            builder = builder.with_row(sdk["dashboard_b"].Row(title).id(index)
                                       .grid_pos(sdk["dashboard_m"].GridPos(h=1, w=GRID_WIDTH, x=0, y=top)))
            top += 1
        bottom = top
        for panel, x, y, w, h in layout(panels):
            index += 1
            builder = builder.with_panel(_panel(sdk, panel, index, (x, top + y, w, h)))
            bottom = max(bottom, top + y + h)
        top = bottom
    return builder.build()


def to_data(model: Any) -> dict[str, Any]:
    """Plain JSON data of an SDK model (what Grafana reads)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return json.loads(json.dumps(model, cls=JSONEncoder))


def _alerts_annotations(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in (data.get("annotations") or {}).get("list") or []
            if isinstance(a, dict) and a.get("name") == ALERTS_ANNOTATION_NAME]


def dashboard_data() -> dict[str, Any]:
    """The dashboard as Grafana reads it: the SDK's JSON plus the annotation keys its model lacks."""
    data = to_data(build_dashboard())
    for annotation in _alerts_annotations(data):
        annotation.update(ANNOTATION_EXTRAS)
    return data


def render_dashboard() -> str:
    """The dashboard file's exact text (sorted keys, 2-space indent, final newline)."""
    return json.dumps(dashboard_data(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def validate_dashboard(data: dict[str, Any], panels: Sequence[Panel] = DASHBOARD_PANELS,
                       variables: Sequence[Variable] = VARIABLES) -> list[str]:
    """Problems found in dashboard JSON ``data`` (empty list when valid).

    The SDK decodes it into its typed models (panel options and Prometheus queries included) and
    must encode it back unchanged, so a misspelled or misplaced key shows up as a difference.
    """
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as pm

    register_default_plugins()
    problems: list[str] = []
    try:
        core = copy.deepcopy(data)  # the annotation keys the SDK's model lacks are checked apart
        annotations = _alerts_annotations(core)
        extras = [{key: a.pop(key, None) for key in ANNOTATION_EXTRAS} for a in annotations]
        model = dm.Dashboard.from_json(core)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"does not decode as a Grafana dashboard: {type(exc).__name__}: {exc}"]
    if len(annotations) != 1 or annotations[0].get("expr") != ALERTS_ANNOTATION_EXPR or \
            extras[0] != ANNOTATION_EXTRAS:
        problems.append(f"the {ALERTS_ANNOTATION_NAME!r} annotation must query {ALERTS_ANNOTATION_EXPR} "
                        f"with {ANNOTATION_EXTRAS}")
    if to_data(model) != core:
        problems.append("does not round-trip through the SDK's dashboard model (unknown or misplaced keys)")
    if model.uid != DASHBOARD_UID:
        problems.append(f"uid is {model.uid!r}, expected {DASHBOARD_UID!r}")
    if model.refresh != REFRESH:
        problems.append(f"refresh is {model.refresh!r}, expected {REFRESH!r}")
    found_vars = {v.name: v for v in model.templating.list_val or []}
    for variable in variables:
        var = found_vars.get(variable.name)
        if var is None:
            problems.append(f"template variable {variable.name!r} is missing")
            continue
        if var.query != variable.query or not var.multi or not var.include_all:
            problems.append(f"template variable {variable.name!r} must be a multi, include-all query "
                            f"variable on {variable.query!r}")
        if var.datasource is None or var.datasource.uid != DATASOURCE_UID:
            problems.append(f"template variable {variable.name!r} does not use datasource {DATASOURCE_UID!r}")
    by_title = {p.title: p for p in model.panels or [] if isinstance(p, dm.Panel)}
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        found = by_title.get(panel.title)
        if found is None:
            problems.append(f"panel {panel.title!r} is missing")
            continue
        if found.type_val != panel.kind:
            problems.append(f"panel {panel.title!r} is a {found.type_val}, expected {panel.kind}")
        targets = found.targets or []
        if len(targets) != 1 or not isinstance(targets[0], pm.Dataquery) or targets[0].expr != panel.expr:
            problems.append(f"panel {panel.title!r} must have one Prometheus query: {panel.expr}")
        elif (targets[0].datasource or {}).get("uid") != DATASOURCE_UID:
            problems.append(f"panel {panel.title!r} query does not use datasource {DATASOURCE_UID!r}")
        pos = found.grid_pos
        if pos is None or pos.x + pos.w > GRID_WIDTH:
            problems.append(f"panel {panel.title!r} has no grid position inside the 24-column grid")
            continue
        cells = {(pos.x + i, pos.y + j) for i in range(pos.w) for j in range(pos.h)}
        if cells & occupied:
            problems.append(f"panel {panel.title!r} overlaps another panel")
        occupied |= cells
    return problems


def write_dashboard(path: Path = DASHBOARD_FILE) -> Path:
    """Regenerate the dashboard file atomically."""
    text = render_dashboard()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dashboard_drift(path: Path = DASHBOARD_FILE) -> str | None:
    """None when ``path`` holds exactly what the generator produces; else what differs."""
    if not path.is_file():
        return f"{path} does not exist"
    expected, actual = render_dashboard(), path.read_text(encoding="utf-8")
    if expected == actual:
        return None
    import difflib

    diff = difflib.unified_diff(actual.splitlines(), expected.splitlines(), "committed", "generated",
                                lineterm="", n=1)
    return "\n".join(list(diff)[:40])

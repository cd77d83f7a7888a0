"""The shared panel definitions: variable substitution as Grafana does it, and every panel query
answering with data from a real Prometheus scraping the real exporter (how the dashboard is verified
where Grafana is absent)."""

from __future__ import annotations

import math
import re

import pytest

from mlops_local.metrics.panels import (
    ALL,
    PANELS,
    VARIABLES,
    format_value,
    get_panel,
    panel_frame,
    panel_values,
    render_expr,
    render_legend,
    variable_query,
)
from mlops_local.metrics.promapi import PrometheusClient

# ---------------------------------------------------------------- definitions, substitution


def test_panels_cover_the_issue_and_have_unique_ids_and_titles() -> None:
    ids = [p.id for p in PANELS]
    assert len(set(ids)) == len(ids) and len({p.title for p in PANELS}) == len(PANELS)
    metrics = " ".join(p.expr for p in PANELS)
    for needed in ("mlops_model_r2", "mlops_model_rmse", "mlops_best_r2", "mlops_training_runs_total",
                   "mlops_training_duration_seconds_bucket", "mlops_sync_errors_total",
                   'up{job="mlops-local"}'):
        assert needed in metrics
    kinds = {(p.id, p.kind) for p in PANELS}
    assert {("r2_latest", "stat"), ("r2_over_time", "timeseries"), ("rmse_latest", "stat"),
            ("rmse_over_time", "timeseries")} <= kinds
    assert all(p.kind in ("stat", "timeseries") and p.unit and p.legend for p in PANELS)


def test_panels_use_only_the_three_dashboard_variables() -> None:
    names = {v.name for v in VARIABLES}
    assert names == {"experiment", "dataset", "model"}
    for panel in PANELS:
        assert set(panel.variables) <= names, panel.id
    assert get_panel("r2_latest").variables == ("experiment", "dataset", "model")


def test_all_or_missing_variables_become_match_anything() -> None:
    expr = render_expr(get_panel("r2_latest"), {"experiment": None, "dataset": "$__all"})
    assert expr == 'mlops_model_r2{experiment=~".*",dataset=~".*",model=~".*"}'
    assert render_expr(get_panel("r2_latest")) == expr
    assert format_value([]) == ALL and format_value(["a", ".*"]) == ALL


def test_values_are_regex_escaped_for_a_promql_string_like_grafana_does() -> None:
    assert format_value("random_forest") == "random_forest"
    # An uploaded file name as dataset: the dot must match a dot only.
    assert format_value("co2.csv") == "co2\\\\.csv"
    assert format_value(["ridge", "lasso"]) == "(ridge|lasso)"
    assert format_value(["a+b"]) == "a\\\\+b"
    assert format_value('q"uote') == 'q\\"uote'
    assert format_value("back\\slash") == "back\\\\\\\\slash"
    rendered = render_expr(get_panel("best_r2"), {"experiment": "e1", "dataset": ["x.csv", "diabetes"]})
    assert rendered == 'mlops_best_r2{experiment=~"e1",dataset=~"(x\\\\.csv|diabetes)"}'


def test_braced_variable_syntax_is_substituted_too() -> None:
    assert render_expr('m{model=~"${model}"}', {"model": "svr"}) == 'm{model=~"svr"}'


def test_legend_renders_like_grafana() -> None:
    panel = get_panel("r2_latest")
    assert render_legend(panel, {"model": "ridge", "dataset": "diabetes"}) == "ridge · diabetes"
    assert render_legend(get_panel("trainings_per_minute"), {"status": "FINISHED"}) == "FINISHED"


def test_variable_queries_chain_on_earlier_variables() -> None:
    by_name = {v.name: v for v in VARIABLES}
    assert by_name["experiment"].query == "label_values(mlops_model_r2, experiment)"
    assert variable_query(by_name["model"], {"experiment": "e", "dataset": None}) == \
        'mlops_model_r2{experiment=~"e",dataset=~".*"}'


def test_unknown_panel_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="r2_latest"):
        get_panel("nope")


# ---------------------------------------------------------------- against a real Prometheus

def _selections(stack) -> list[dict[str, object]]:
    """All values, one specific value of each variable, and a multi-value selection."""
    first = stack.trainings[0]
    return [
        {},
        {"experiment": first.experiment, "dataset": first.dataset, "model": first.model},
        {"dataset": [t.dataset for t in stack.trainings], "model": [t.model for t in stack.trainings]},
    ]


@pytest.mark.integration
def test_every_panel_query_returns_data_from_real_prometheus(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    for variables in _selections(prometheus_stack):
        for panel in PANELS:
            expr = render_expr(panel, variables)
            assert not re.search(r"\$\w", expr), expr
            samples = client.query(expr)
            assert any(math.isfinite(s.value) for s in samples), \
                f"panel {panel.id!r} returned no data for {variables}: {expr} -> {samples}"
            series = client.query_range(expr, prometheus_stack.since, prometheus_stack.until, 1)
            assert any(s.points for s in series), f"panel {panel.id!r} range query is empty: {expr}"


@pytest.mark.integration
def test_specific_values_select_only_their_series(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    dotted = next(t for t in prometheus_stack.trainings if "." in t.dataset)
    samples = client.query(render_expr(get_panel("r2_latest"), {"dataset": dotted.dataset}))
    assert {s.labels["dataset"] for s in samples} == {dotted.dataset}
    assert any(abs(s.value - dotted.metrics["r2"]) < 1e-9 for s in samples)
    # The dot is a literal: a name differing only at that position must not match.
    lookalike = dotted.dataset.replace(".", "x")
    assert client.query(render_expr(get_panel("r2_latest"), {"dataset": lookalike})) == []


@pytest.mark.integration
def test_variable_values_come_from_prometheus_label_values(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    by_name = {v.name: v for v in VARIABLES}
    experiments = client.label_values("experiment", variable_query(by_name["experiment"]))
    assert set(experiments) == {t.experiment for t in prometheus_stack.trainings}
    first = prometheus_stack.trainings[0]
    models = client.label_values("model", variable_query(by_name["model"], {"dataset": first.dataset}))
    assert models == sorted({t.model for t in prometheus_stack.trainings if t.dataset == first.dataset})


@pytest.mark.integration
def test_panel_frame_and_values_give_the_ui_chart_ready_data(prometheus_stack) -> None:
    client: PrometheusClient = prometheus_stack.client
    frame = panel_frame(client, get_panel("r2_over_time"), {"model": "random_forest"},
                        prometheus_stack.since, prometheus_stack.until, 1)
    forests = [t for t in prometheus_stack.trainings if t.model == "random_forest"]
    expected = {f"random_forest · {t.dataset}" for t in forests}
    assert set(frame["series"]) == expected
    assert str(frame["time"].dt.tz) == "UTC" and frame["value"].between(-1, 1).all()
    values = dict(panel_values(client, get_panel("best_r2"), {"experiment": "team-a"}))
    best = {t.dataset: t.metrics["r2"] for t in prometheus_stack.trainings if t.experiment == "team-a"}
    assert values == pytest.approx(best)
    empty = panel_frame(client, get_panel("r2_over_time"), {"model": "no-such-model"},
                        prometheus_stack.since, prometheus_stack.until, 1)
    assert empty.empty and {"time", "series", "value"} <= set(empty.columns)

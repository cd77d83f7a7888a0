"""The Grafana dashboard: generated from the shared panels, committed without drift, valid for the SDK's
models, and carrying what provisioning relies on (uid, datasource uid, variables, refresh)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mlops_local import cli
from mlops_local.grafana import DASHBOARD_FILE, DATASOURCE_UID
from mlops_local.metrics.panels import PANELS, VARIABLES
from mlops_local.metrics.serving_panels import ALERT_PANELS, SERVING_PANELS, get_serving_panel

pytest.importorskip("grafana_foundation_sdk",
                    reason="grafana-foundation-sdk is not installed (the test extra has it)")

from mlops_local.grafana.dashboard import (  # after the skip without the SDK
    ALERTS_ANNOTATION_NAME,
    DASHBOARD_PANELS,
    INSTANT_KINDS,
    dashboard_drift,
    render_dashboard,
    validate_dashboard,
)


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def test_committed_dashboard_is_exactly_what_the_generator_produces() -> None:
    drift = dashboard_drift()
    assert drift is None, f"run `mlops-local grafana-dashboard` and commit the result:\n{drift}"
    assert render_dashboard() == render_dashboard()  # deterministic


def test_committed_dashboard_validates_against_the_sdk_models(committed: dict) -> None:
    assert validate_dashboard(committed) == []


def test_dashboard_identity_refresh_and_variables(committed: dict) -> None:
    assert committed["uid"] == "mlops-local" and committed["refresh"] == "5s"
    variables = {v["name"]: v for v in committed["templating"]["list"]}
    assert list(variables) == ["experiment", "dataset", "model"]
    for spec in VARIABLES:
        var = variables[spec.name]
        assert var["type"] == "query" and var["query"] == spec.query
        assert var["query"].startswith("label_values(")
        assert var["multi"] is True and var["includeAll"] is True and var["allValue"] == ".*"
        assert var["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
    assert len({v["id"] for v in variables.values()}) == 3


def test_every_shared_panel_is_on_the_dashboard_with_its_exact_query(committed: dict) -> None:
    panels = {p["title"]: p for p in committed["panels"] if p["type"] != "row"}
    assert len(panels) == len(DASHBOARD_PANELS) > len(PANELS)
    for spec in DASHBOARD_PANELS:
        panel = panels[spec.title]
        assert panel["type"] == spec.kind
        (target,) = panel["targets"]
        assert target["expr"] == spec.expr and target["legendFormat"] == spec.legend
        assert target["datasource"]["uid"] == DATASOURCE_UID and panel["datasource"]["uid"] == DATASOURCE_UID
        assert target["instant"] is (spec.kind in INSTANT_KINDS)
        assert panel["fieldConfig"]["defaults"]["unit"] == spec.unit
    assert len({p["id"] for p in committed["panels"]}) == len(committed["panels"])


def test_serving_and_alerts_rows_hold_their_panels_below_the_training_panels(committed: dict) -> None:
    rows = [p for p in committed["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["Serving", "Alerts"]
    serving_y, alerts_y = (r["gridPos"]["y"] for r in rows)
    by_title = {p["title"]: p["gridPos"] for p in committed["panels"]}
    training_bottom = max(by_title[p.title]["y"] + by_title[p.title]["h"] for p in PANELS)
    assert serving_y == training_bottom
    for spec in SERVING_PANELS:
        assert serving_y < by_title[spec.title]["y"] < alerts_y, spec.title
    (alerts,) = ALERT_PANELS
    assert by_title[alerts.title]["y"] > alerts_y
    predictions = next(p for p in committed["panels"] if p["title"] == get_serving_panel(
        "serving_predictions").title)
    assert predictions["targets"][0]["format"] == "heatmap"  # cumulative buckets shown per bucket
    psi = next(p for p in committed["panels"] if p["title"] == get_serving_panel("serving_feature_psi").title)
    steps = [s.get("value") for s in psi["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 0.1, 0.25]


def test_firing_alerts_are_annotated_from_prometheus(committed: dict) -> None:
    (annotation,) = [a for a in committed["annotations"]["list"] if a["name"] == ALERTS_ANNOTATION_NAME]
    assert annotation["expr"] == 'ALERTS{alertstate="firing"}' and annotation["enable"] is True
    assert annotation["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
    assert annotation["titleFormat"] == "{{alertname}}" and "severity" in annotation["tagKeys"]


@pytest.mark.parametrize("breakage, problem", [
    (lambda d: d.update(uid="other"), "uid is 'other'"),
    (lambda d: d["panels"][0].update(gridpos=d["panels"][0].pop("gridPos")), "round-trip"),
    (lambda d: d["panels"][1]["targets"][0].update(expr="up"), "must have one Prometheus query"),
    (lambda d: d["templating"]["list"].pop(), "template variable 'model' is missing"),
    (lambda d: d["templating"]["list"][0].update(multi=False), "multi, include-all"),
    (lambda d: d["panels"][1]["gridPos"].update(x=0, y=0), "overlaps"),
    (lambda d: d["panels"][2]["targets"][0]["datasource"].update(uid="x"), "datasource"),
    (lambda d: d.update(panels="nope"), "does not decode"),
    (lambda d: d["annotations"]["list"][0].pop("titleFormat"), "'Alerts firing' annotation"),
    (lambda d: d["annotations"]["list"].clear(), "'Alerts firing' annotation"),
    (lambda d: next(p for p in d["panels"] if p["title"] == "Latency p50 / p95 / p99")["targets"][0]
     .update(expr="up"), "'Latency p50 / p95 / p99' must have one Prometheus query"),
])
def test_validation_catches_broken_dashboards(committed: dict, breakage, problem: str) -> None:
    broken = copy.deepcopy(committed)
    breakage(broken)
    problems = validate_dashboard(broken)
    assert any(problem in p for p in problems), problems


def test_cli_check_passes_on_the_committed_file_and_fails_on_drift(tmp_path: Path, capsys) -> None:
    assert cli.main(["grafana-dashboard", "--check"]) == 0
    copy_path = tmp_path / "dash.json"
    assert cli.main(["grafana-dashboard", "--out", str(copy_path)]) == 0
    assert copy_path.read_text() == DASHBOARD_FILE.read_text()
    assert cli.main(["grafana-dashboard", "--check", "--out", str(copy_path)]) == 0
    copy_path.write_text(copy_path.read_text().replace('"5s"', '"1m"'))
    capsys.readouterr()
    assert cli.main(["grafana-dashboard", "--check", "--out", str(copy_path)]) == 1
    err = capsys.readouterr().err
    assert "differs" in err and '"1m"' in err and "mlops-local grafana-dashboard" in err
    assert cli.main(["grafana-dashboard", "--check", "--out", str(tmp_path / "missing.json")]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["dash.json"]  # no temporary file left behind

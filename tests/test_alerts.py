"""Alert rules: rendered from the settings, checked and unit-tested by the real promtool; firing alerts
read for the UI; the optional Alertmanager."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops_local.alerts import promtool, render
from mlops_local.alerts.firing import parse, worst_severity
from mlops_local.services import alertmanager, prometheus
from mlops_local.settings import Settings, SettingsError
from tests.services import MLOPS, stack_env

# The alerts issue 15 names, with their severities (FeatureDrift warns above 0.1, is critical above 0.25).
ALERTS = {"ModelQualityRegression": {"warning"}, "ChampionBeaten": {"info"},
          "MetricsTargetDown": {"critical"}, "ExporterSyncFailing": {"warning"},
          "ServingErrorRate": {"critical"}, "ServingLatencyHigh": {"warning"},
          "FeatureDrift": {"warning", "critical"}}
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")  # level:metric:operation


def _promtool() -> Path:
    found = prometheus.find_promtool(Settings.from_env({"MLOPS_HOME": "/nonexistent"}))
    assert found is not None, "promtool missing: bin/test installs Prometheus, which ships it"
    return found


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), **env})


def _rules(settings: Settings) -> list[dict]:
    groups = yaml.safe_load(render.render_rules(settings))["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.parametrize("env", [
    {},
    {"MLOPS_ALERT_FOR_SCALE": "0.05"},
    {"MLOPS_ALERT_FOR_SCALE": "0"},
    {"MLOPS_ALERT_R2_DROP": "0.3", "MLOPS_ALERT_P99_MS": "250", "MLOPS_SYNC_INTERVAL": "90"},
    {"MLOPS_ALERT_P99_MS": "7.5", "MLOPS_ALERT_FOR_SCALE": "2", "MLOPS_SCRAPE_INTERVAL": "0.5"},
], ids=["defaults", "short-for", "no-for", "other-thresholds", "small-p99-long-for"])
def test_promtool_accepts_the_rendered_config_and_rules_and_their_unit_tests_pass(
        env: dict[str, str], tmp_path: Path) -> None:
    checks = promtool.check_all(_settings(tmp_path, **env), _promtool(), tmp_path / "out")
    assert [c.what.split()[:2] for c in checks] == [["check", "config"], ["check", "rules"],
                                                    ["test", "rules"]]
    for check in checks:
        assert check.ok, f"promtool {check.what}:\n{check.output}"
    assert "SUCCESS" in checks[2].output


@pytest.mark.parametrize("mutation", [
    ("> 0.02\n", "> 0.05\n"),  # ModelQualityRegression's threshold no longer the setting's
    ("mlops_feature_drift_psi > 0.1", "mlops_feature_drift_psi > 0.2"),
    ("severity: info", "severity: warning"),
    ('up{job="mlops-local"} == 0', 'up{job="mlops-local"} == 2'),
    ('{status="error"}', '{status=~"error|bad_request"}'),
])
def test_the_rule_unit_tests_fail_when_a_rule_drifts_from_them(mutation: tuple[str, str],
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    rules = render.write_rules(_settings(tmp_path), folder)
    text = rules.read_text()
    assert mutation[0] in text
    rules.write_text(text.replace(mutation[0], mutation[1], 1))
    result = promtool.run(_promtool(), "test", "rules", render.TESTS_FILE, cwd=folder)
    assert not result.ok and "FAILED" in result.output, result.output


def test_every_alert_has_severity_summary_action_and_a_firing_and_a_quiet_test(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rules = _rules(settings)
    alerts = [r for r in rules if "alert" in r]
    assert {a["alert"] for a in alerts} == set(ALERTS)
    for name, severities in ALERTS.items():
        assert {a["labels"]["severity"] for a in alerts if a["alert"] == name} == severities
    for alert in alerts:
        assert alert["annotations"]["summary"] and alert["annotations"]["action"], alert["alert"]
    records = [r["record"] for r in rules if "record" in r]
    assert records and all(RECORD_NAME.match(name) for name in records), records
    tests = yaml.safe_load(render.render_tests(settings))["tests"]
    cases = [(case["alertname"], case["exp_alerts"]) for t in tests for case in t.get("alert_rule_test", [])]
    for name, severities in ALERTS.items():
        fired = [exp for alertname, exps in cases if alertname == name for exp in exps]
        assert {exp["exp_labels"]["severity"] for exp in fired} == severities, name
        assert all(set(exp["exp_annotations"]) == {"summary", "action"} for exp in fired), name
        assert any(alertname == name and exps == [] for alertname, exps in cases), f"{name}: no quiet case"


def test_thresholds_and_for_durations_come_from_the_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path, MLOPS_ALERT_R2_DROP="0.05", MLOPS_ALERT_P99_MS="250",
                         MLOPS_ALERT_FOR_SCALE="0.1", MLOPS_SYNC_INTERVAL="10")
    by_name = {(r.get("alert") or r["record"], r.get("labels", {}).get("severity")): r
               for r in _rules(settings)}
    quality = by_name[("ModelQualityRegression", "warning")]
    assert quality["expr"].endswith("> 0.05") and quality["for"] == "6s"
    assert "(allowed: 0.05)" in quality["annotations"]["summary"]
    latency = by_name[("ServingLatencyHigh", "warning")]
    assert latency["expr"].endswith("* 1000 > 250") and latency["for"] == "30s"
    sync = by_name[("ExporterSyncFailing", "warning")]
    assert "> 50" in sync["expr"] and "[1m]" in sync["expr"]  # 5 sync intervals; a minute of errors
    assert by_name[("MetricsTargetDown", "critical")]["for"] == "3s"
    assert by_name[("FeatureDrift", "critical")]["for"] == "1m"


def test_serve_prometheus_renders_rules_into_the_data_dir_and_loads_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path, MLOPS_ALERT_R2_DROP="0.07")
    config = prometheus.config_path(settings, alertmanager=False)
    assert config == settings.prometheus_dir / "prometheus.yml"
    loaded = yaml.safe_load(config.read_text())
    rules = config.parent / loaded["rule_files"][0]
    assert rules.is_file() and "> 0.07" in rules.read_text()
    assert (rules.parent / render.TESTS_FILE).is_file()  # next to the rules they test
    assert "alerting" not in loaded
    command = prometheus.command(settings, Path("/usr/bin/prometheus"))
    assert f"--config.file={config}" in command


@pytest.mark.parametrize("variable, value, allowed", [
    ("MLOPS_ALERT_R2_DROP", "1.5", "between 0 and 1"),
    ("MLOPS_ALERT_R2_DROP", "nope", "could not convert"),
    ("MLOPS_ALERT_P99_MS", "0", "greater than 0"),
    ("MLOPS_ALERT_FOR_SCALE", "-1", "0 or more"),
])
def test_a_bad_alert_setting_is_one_message_naming_it(variable: str, value: str, allowed: str,
                                                      tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=rf"{variable}='{re.escape(value)}' is not valid: .*{allowed}"):
        _settings(tmp_path, **{variable: value})
    env = stack_env(tmp_path / "home", **{variable: value})
    out = subprocess.run([*MLOPS, "alerts", "test"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and variable in out.stderr and "Traceback" not in out.stderr


def test_the_alerts_test_command_runs_promtool_and_keeps_the_rendering_when_asked(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", MLOPS_ALERT_FOR_SCALE="0.5")
    out = subprocess.run([*MLOPS, "alerts", "test", "--out", str(tmp_path / "kept")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok   promtool") == 3
    assert "for: 30s" in (tmp_path / "kept" / "prometheus" / "rules" / render.RULES_FILE).read_text()


def _api_alert(name: str, severity: str, state: str = "firing", at: str = "2026-12-01T10:00:00.123456789Z",
               **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, "job": "mlops-local", "instance": "x:1",
                       **labels},
            "annotations": {"summary": f"{name} summary", "action": f"{name} action"},
            "state": state, "activeAt": at, "value": "1"}


def test_firing_alerts_are_listed_worst_first_once_per_problem() -> None:
    alerts = parse([
        _api_alert("ChampionBeaten", "info", dataset="co2", model="rf"),
        _api_alert("FeatureDrift", "warning", model="m", feature="a"),
        _api_alert("FeatureDrift", "critical", at="2026-12-01T10:05:00Z", model="m", feature="a"),
        _api_alert("FeatureDrift", "warning", model="m", feature="b"),
        _api_alert("ServingLatencyHigh", "warning", state="pending", model="m"),
    ])
    assert [(a.name, a.severity, a.where) for a in alerts] == [
        ("FeatureDrift", "critical", "feature=a, model=m"),
        ("FeatureDrift", "warning", "feature=b, model=m"),
        ("ChampionBeaten", "info", "dataset=co2, model=rf"),
    ]
    assert alerts[0].since is not None and alerts[0].since.isoformat() == "2026-12-01T10:05:00+00:00"
    assert alerts[1].since.microsecond == 123456 and alerts[0].action == "FeatureDrift action"
    assert worst_severity(alerts) == "critical" and worst_severity([]) is None


def test_alertmanager_config_sends_nowhere_and_binds_locally(tmp_path: Path) -> None:
    settings = _settings(tmp_path, MLOPS_ALERTMANAGER_PORT="19093")
    command = alertmanager.command(settings, Path("/usr/bin/alertmanager"))
    assert "--web.listen-address=127.0.0.1:19093" in command and "--cluster.listen-address=" in command
    config = yaml.safe_load((settings.alertmanager_dir / "alertmanager.yml").read_text())
    assert config["receivers"] == [{"name": "mlops-local"}]  # no webhook, no e-mail: nothing leaves
    rendered = yaml.safe_load(prometheus.config_path(settings, alertmanager=True).read_text())
    assert rendered["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    amtool = shutil.which("amtool")
    if amtool:  # Debian's prometheus-alertmanager ships it
        config_file = settings.alertmanager_dir / "alertmanager.yml"
        checked = subprocess.run([amtool, "check-config", str(config_file)], capture_output=True, text=True,
                                 timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_serve_alertmanager_without_it_prints_the_hint_and_idles_until_sigterm(tmp_path: Path) -> None:
    empty = tmp_path / "no-alertmanager-here"
    empty.mkdir()
    env = stack_env(tmp_path / "home", PATH=str(empty))
    proc = subprocess.Popen([*MLOPS, "serve", "alertmanager"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert "Alertmanager is not installed" in first
        assert proc.poll() is None, "serve alertmanager must stay up (honcho) when Alertmanager is missing"
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert "apt-get install prometheus-alertmanager" in first + rest and "Traceback" not in first + rest


@pytest.mark.skipif(alertmanager.find_binary() is None,
                    reason="Alertmanager not installed (Debian: apt-get install prometheus-alertmanager)")
def test_serve_alertmanager_on_a_taken_port_says_so_and_idles_instead_of_stopping_the_stack(
        tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home")
    with socket.socket() as blocker:  # e.g. Debian's own prometheus-alertmanager service on 9093
        blocker.bind(("127.0.0.1", int(env["MLOPS_ALERTMANAGER_PORT"])))
        blocker.listen()
        proc = subprocess.Popen([*MLOPS, "serve", "alertmanager"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            first = proc.stdout.readline()
            assert f"port {env['MLOPS_ALERTMANAGER_PORT']} on 127.0.0.1 is already in use" in first
            assert proc.poll() is None, "a taken port must not stop honcho's stack"
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = proc.stdout.read()
            proc.wait(timeout=30)
    assert proc.returncode == 0
    assert "systemctl disable --now prometheus-alertmanager" in first + rest and "Traceback" not in rest

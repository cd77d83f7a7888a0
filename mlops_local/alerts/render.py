"""Render the packaged rule template and its promtool tests with the thresholds from the settings."""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from mlops_local.settings import Settings

TEMPLATES = Path(__file__).resolve().parent
RULES_TEMPLATE = TEMPLATES / "rules.yml"
TESTS_TEMPLATE = TEMPLATES / "rules_test.yml"
RULES_FILE = "mlops-local.rules.yml"  # the test file names it: both land in the same folder
TESTS_FILE = "mlops-local.rules.test.yml"

# `for:` of each alert at MLOPS_ALERT_FOR_SCALE=1, in seconds (the README's Alerts table).
BASE_FOR = {
    "quality": 60.0,    # ModelQualityRegression
    "champion": 60.0,   # ChampionBeaten
    "target": 30.0,     # MetricsTargetDown
    "sync": 60.0,       # ExporterSyncFailing
    "errors": 60.0,     # ServingErrorRate (over a 5-minute rate)
    "latency": 300.0,   # ServingLatencyHigh
    "drift": 600.0,     # FeatureDrift
}
STALE_SYNCS = 5  # ExporterSyncFailing: the last success is older than this many sync intervals
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def duration(seconds: float) -> str:
    """A Prometheus duration in the largest unit that holds it exactly (``10m``, ``90s``, ``1500ms``)."""
    millis = max(0, round(seconds * 1000))
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms" if millis else "0s"


def _number(value: float) -> str:
    """A threshold as Prometheus and a person read it (``0.02``, ``100``)."""
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def for_seconds(settings: Settings) -> dict[str, float]:
    """Each alert's effective `for:` in seconds (scaled by MLOPS_ALERT_FOR_SCALE)."""
    return {name: seconds * settings.alert_for_scale for name, seconds in BASE_FOR.items()}


def rule_values(settings: Settings) -> dict[str, str]:
    """The ${...} values of rules.yml."""
    values = {f"for_{name}": duration(seconds) for name, seconds in for_seconds(settings).items()}
    values.update({
        "r2_drop": _number(settings.alert_r2_drop),
        "p99_ms": _number(settings.alert_p99_ms),
        "sync_error_window": duration(max(60.0, 2 * settings.sync_interval)),
        "sync_stale_seconds": _number(STALE_SYNCS * settings.sync_interval),
    })
    return values


def test_values(settings: Settings) -> dict[str, str]:
    """The ${...} values of rules_test.yml: inputs on either side of the same thresholds, and eval times
    past each (scaled) `for:`."""
    fors = for_seconds(settings)
    margin = 120.0
    evals = {f"eval_{name}": seconds + margin for name, seconds in fors.items()}
    # The stale-sync case needs the clock past the staleness limit before `for:` starts counting.
    evals["eval_stale"] = STALE_SYNCS * settings.sync_interval + fors["sync"] + margin
    # Rates need 5 minutes of samples behind them.
    for name in ("eval_errors", "eval_latency"):
        evals[name] = max(evals[name], 300.0 + fors[name.removeprefix("eval_")] + margin)
    drop = settings.alert_r2_drop
    threshold_s = settings.alert_p99_ms / 1000
    values = rule_values(settings)
    values.update({name: duration(seconds) for name, seconds in evals.items()})
    values.update({
        "samples": str(math.ceil(max(evals.values()) / 15) + 10),
        "r2_bad": repr(0.9 - 2 * drop),
        "r2_bad_drop": f"{0.9 - (0.9 - 2 * drop):.4f}",
        "r2_near": repr(0.9 - drop / 2),
        "le_half": repr(threshold_s / 2),
        "le_at": repr(threshold_s),
        "le_double": repr(threshold_s * 2),
        # Every request in (threshold, 2 * threshold]: histogram_quantile interpolates to 1.99 x.
        "p99_slow": f"{(threshold_s + threshold_s * 0.99) * 1000:.0f}",
    })
    return values


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with every ${name} replaced; a name without a value is an error, never left in."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for ${{{name}}} in the alert rule template")
        return values[name]
    text = _PLACEHOLDER.sub(replace, template)
    yaml.safe_load(text)  # a rendering that is not YAML any more fails here, not in Prometheus
    return text


def render_rules(settings: Settings) -> str:
    """The alerting and recording rules for these settings."""
    return fill(RULES_TEMPLATE.read_text(encoding="utf-8"), rule_values(settings))


def render_tests(settings: Settings) -> str:
    """The promtool unit tests of those rules, rendered from the same settings."""
    return fill(TESTS_TEMPLATE.read_text(encoding="utf-8"), test_values(settings))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # Prometheus never reads a half-written rule file


def write_rules(settings: Settings, folder: Path) -> Path:
    """Render the rules and their tests into ``folder``; returns the rules file."""
    folder.mkdir(parents=True, exist_ok=True)
    rules, tests = render_rules(settings), render_tests(settings)
    _write(folder / TESTS_FILE, tests)
    _write(folder / RULES_FILE, rules)
    return folder / RULES_FILE

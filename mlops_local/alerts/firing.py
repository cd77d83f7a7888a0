"""The alerts firing in Prometheus, as the UI shows them: worst first, one line per problem."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mlops_local.metrics.promapi import PrometheusClient

SEVERITIES = ("critical", "warning", "info")  # worst first
# Labels that say where the problem is (the rest, e.g. job and instance, say who scraped it).
HIDDEN_LABELS = frozenset({"alertname", "severity", "job", "instance", "__name__"})
_NANOS = re.compile(r"(\.\d{1,6})\d*")  # datetime reads microseconds; Prometheus sends nanoseconds


@dataclass(frozen=True)
class FiringAlert:
    """One firing alert: its name, severity, the labels that matter, since when, and its annotations."""

    name: str
    severity: str
    labels: Mapping[str, str] = field(default_factory=dict)
    since: datetime | None = None
    summary: str = ""
    action: str = ""

    @property
    def rank(self) -> int:
        """0 for critical; unknown severities sort after info."""
        return SEVERITIES.index(self.severity) if self.severity in SEVERITIES else len(SEVERITIES)

    @property
    def where(self) -> str:
        """The labels that matter as ``model=ridge, dataset=co2``."""
        return ", ".join(f"{key}={value}" for key, value in sorted(self.labels.items()))


def _since(text: object) -> datetime | None:
    """activeAt (RFC 3339, nanoseconds) as an aware datetime; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = datetime.fromisoformat(_NANOS.sub(r"\1", text))
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def parse(raw: Iterable[Mapping]) -> list[FiringAlert]:
    """The firing alerts of an /api/v1/alerts answer, worst severity first, then oldest first.

    An alert that fires at two severities for the same labels (FeatureDrift: warning above 0.1,
    critical above 0.25) is listed once, at the worse one.
    """
    worst: dict[tuple, FiringAlert] = {}
    for item in raw:
        if item.get("state") != "firing":
            continue
        labels = dict(item.get("labels") or {})
        annotations = dict(item.get("annotations") or {})
        alert = FiringAlert(
            name=labels.get("alertname", "?"), severity=labels.get("severity", "none"),
            labels={k: v for k, v in labels.items() if k not in HIDDEN_LABELS},
            since=_since(item.get("activeAt")), summary=annotations.get("summary", ""),
            action=annotations.get("action", ""))
        key = (alert.name, tuple(sorted(alert.labels.items())))
        if key not in worst or alert.rank < worst[key].rank:
            worst[key] = alert
    oldest = datetime.max.replace(tzinfo=UTC)
    return sorted(worst.values(), key=lambda a: (a.rank, a.since or oldest, a.name, a.where))


def firing_alerts(client: PrometheusClient) -> list[FiringAlert]:
    """The alerts firing now (ServiceUnavailable when Prometheus does not answer)."""
    return parse(client.alerts())


def worst_severity(alerts: Iterable[FiringAlert]) -> str | None:
    """The worst severity among ``alerts``, or None when there are none."""
    ranked = sorted(alerts, key=lambda a: a.rank)
    return ranked[0].severity if ranked else None

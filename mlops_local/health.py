"""Health of each service, checked concurrently with short timeouts (used by `status` and the UI)."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlops_local.settings import Settings
from mlops_local.uris import split_credentials

NO_MODEL = "no model"


@dataclass(frozen=True)
class ServiceCheck:
    """How to tell one service is healthy."""

    name: str
    url: str
    probe: str
    required: bool


@dataclass(frozen=True)
class ServiceStatus:
    """Result of one check: `state` is up, down, not installed (Grafana) or no model (the model service)."""

    name: str
    url: str
    state: str
    detail: str
    required: bool

    @property
    def up(self) -> bool:
        return self.state == "up"


def service_checks(settings: Settings) -> list[ServiceCheck]:
    """The services and the metrics endpoint, with their health URLs."""
    return [
        ServiceCheck("mlflow", settings.mlflow_url, settings.mlflow_url + "/health", True),
        ServiceCheck("prometheus", settings.prometheus_url, settings.prometheus_url + "/-/ready", True),
        ServiceCheck("ui", settings.ui_url, settings.ui_url + "/_stcore/health", True),
        ServiceCheck("metrics", settings.metrics_url, settings.metrics_url, True),
        # Optional: it answers 503 "no model yet" until a model has the alias, which is not an outage.
        ServiceCheck("model", settings.serve_url, settings.serve_url + "/health", False),
        ServiceCheck("grafana", settings.grafana_url, settings.grafana_url + "/api/health", False),
    ]


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """(healthy, detail) for one GET; user:password in ``url`` is sent as basic auth."""
    target, authorization = split_credentials(url)
    request = urllib.request.Request(target)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


def check(
    settings: Settings, timeout: float = 1.0, grafana_installed: bool | None = None
) -> list[ServiceStatus]:
    """Check every service at once; Grafana not answering and not installed is 'not installed'."""
    checks = service_checks(settings)
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        results = list(pool.map(lambda c: probe(c.probe, timeout), checks))
    if grafana_installed is None:
        from mlops_local.services.grafana import find_grafana

        grafana_installed = find_grafana() is not None
    statuses = []
    for chk, (ok, detail) in zip(checks, results, strict=False):
        state = "up" if ok else "down"
        if chk.name == "grafana" and not ok and not grafana_installed:
            state, detail = "not installed", "optional; see README to install"
        elif chk.name == "model" and detail == "HTTP 503":
            state, detail = NO_MODEL, f"no model with alias {settings.serve_alias!r} yet: register one"
        statuses.append(ServiceStatus(chk.name, chk.url, state, detail, chk.required))
    return statuses

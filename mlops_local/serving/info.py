"""What the model service says about itself (/health, /version) and asking it to re-check its alias now.

Used by the UI's Serving page; a service that is down or not the model service is a state, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

DOWN, NO_MODEL, SERVING = "down", "no model", "serving"


@dataclass(frozen=True)
class ServiceInfo:
    """The service's state (down, no model, serving), its /version body when serving, and why if not."""

    state: str
    url: str
    detail: str = ""
    alias: str = ""
    model: str | None = None  # the configured name (no model) or the served one
    version: dict[str, object] = field(default_factory=dict)


def service_info(url: str, timeout: float = 2.0) -> ServiceInfo:
    """Ask the service at ``url`` what it serves; never raises for a service that is down or odd."""
    try:
        resp = requests.get(f"{url}/version", timeout=timeout)
        body = resp.json()
    except requests.RequestException as exc:
        return ServiceInfo(DOWN, url, detail=f"not answering ({type(exc).__name__})")
    except ValueError:
        return ServiceInfo(DOWN, url, detail=f"answers HTTP {resp.status_code} without JSON: "
                                             "is something else listening on MLOPS_SERVE_PORT?")
    if not isinstance(body, dict):
        return ServiceInfo(DOWN, url, detail="answers something that is not the model service")
    if resp.status_code == 503:
        return ServiceInfo(NO_MODEL, url, detail=str(body.get("status", "")),
                           alias=str(body.get("alias", "")), model=body.get("model"))
    if resp.status_code != 200 or "version" not in body:
        return ServiceInfo(DOWN, url, detail=f"/version answers HTTP {resp.status_code}")
    return ServiceInfo(SERVING, url, alias=str(body.get("alias", "")), model=str(body.get("name", "")),
                       version=body)


def request_reload(url: str, timeout: float = 60.0) -> tuple[bool, str]:
    """POST /reload: (swapped, message). The service loads a moved alias before answering."""
    try:
        resp = requests.post(f"{url}/reload", timeout=timeout)
        body = resp.json()
    except requests.RequestException as exc:
        return False, f"the model service at {url} is not answering ({type(exc).__name__})"
    except ValueError:
        return False, f"the model service at {url} answered HTTP {resp.status_code} without JSON"
    if resp.status_code != 200:
        return False, str(body.get("message", f"HTTP {resp.status_code}"))
    return bool(body.get("swapped")), str(body.get("message", ""))

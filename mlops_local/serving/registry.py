"""Where an alias points, asked of the registry's REST API with the standard library only.

The model service polls the registry every few seconds, and on a fresh stack no model carries the alias
for a long while: answering that with MLflow's client would import MLflow, pandas and pyarrow (about
110 MB) into a service that has nothing to serve. This asks the same two endpoints MLflow's client does
(``registered-models/alias`` and ``registered-models/search``) and gives a definite answer or none:
whenever the question needs MLflow's client (a store that is not HTTP, MLflow's authentication or TLS
settings, an answer this does not recognise), it raises :class:`CannotTell` and the holder asks MLflow.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mlops_local.uris import split_credentials

API = "/api/2.0/mlflow/registered-models"
# What MLflow's HTTP client reads besides the URI (mlflow/utils/rest_utils.py, credentials.py): with
# any of them set, only MLflow's client sends the request as the user configured it.
CLIENT_SETTINGS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_TRACKING_INSECURE_TLS",
                   "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                   "MLFLOW_ENABLE_WORKSPACES")
CREDENTIALS_FILE = Path("~/.mlflow/credentials")
# Error codes that mean "no such model or alias" (no model to serve), for MLflow's client as for this.
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
SEARCH_PAGE = 100  # registered models looked at when no name is set (most recently updated first)


class CannotTell(Exception):
    """The look-up has no definite answer without MLflow's client."""


def answerable(uri: str) -> bool:
    """Whether a plain HTTP request reaches the registry at ``uri`` as MLflow's client would."""
    if not uri.startswith(("http://", "https://")):
        return False
    if any(os.environ.get(name, "").lower() not in ("", "false", "0") for name in CLIENT_SETTINGS):
        return False
    return not CREDENTIALS_FILE.expanduser().exists()


def _get(uri: str, endpoint: str, query: dict[str, object], timeout: float) -> dict:
    """The JSON answer of GET ``endpoint``; OSError when the server does not answer."""
    base, authorization = split_credentials(uri.rstrip("/"))
    request = urllib.request.Request(f"{base}{API}/{endpoint}?{urllib.parse.urlencode(query, doseq=True)}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error_code")
        except (ValueError, AttributeError):
            error = None
        if error in NOT_FOUND:  # MLflow's "no such model or alias"
            return {"error_code": error}
        if exc.code >= 500:  # down for now (as MLflow's client reports it): polled again, still without it
            raise ConnectionError(f"the registry answered HTTP {exc.code}") from None
        raise CannotTell(f"HTTP {exc.code}") from None  # refused (auth), not MLflow: its client says
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            raise CannotTell(f"TLS: {exc.reason}") from None
        raise
    except ssl.SSLError as exc:
        raise CannotTell(f"TLS: {exc}") from None
    except http.client.HTTPException as exc:  # cut off mid-answer: as a connection that failed
        raise ConnectionError(f"the registry's answer was cut off ({type(exc).__name__})") from None
    except ValueError as exc:  # not JSON: not an MLflow server
        raise CannotTell(f"unexpected answer: {exc}") from None


def alias_target(uri: str, name: str | None, alias: str, timeout: float) -> tuple[str, str] | None:
    """(name, version) that ``name@alias`` points at now, as :func:`holder.resolve` answers it; without a
    name, the most recently updated registered model carrying ``alias``; None when there is none.

    Raises OSError when the registry does not answer (or answers a server error) and CannotTell when only
    MLflow's client can say.
    """
    if not answerable(uri):
        raise CannotTell(f"{uri.split(':', 1)[0]} store or MLflow client settings")
    if name:
        answer = _get(uri, "alias", {"name": name, "alias": alias}, timeout)
        if "error_code" in answer:
            return None
        try:
            return name, str(answer["model_version"]["version"])
        except (KeyError, TypeError):
            raise CannotTell("unexpected answer to registered-models/alias") from None
    answer = _get(uri, "search", {"max_results": SEARCH_PAGE, "order_by": ["last_updated_timestamp DESC"]},
                  timeout)
    if "error_code" in answer:
        raise CannotTell(f"registered-models/search answered {answer['error_code']}")
    try:
        for model in answer.get("registered_models", []):
            for entry in model.get("aliases", []):
                if entry["alias"] == alias:
                    return model["name"], str(entry["version"])
    except (KeyError, TypeError, AttributeError):
        raise CannotTell("unexpected answer to registered-models/search") from None
    return None

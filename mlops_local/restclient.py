"""MLflow's REST API with the standard library: the few calls the idle services make, without MLflow.

MLflow's client imports MLflow, pandas and pyarrow (over 100 MB) before it sends a request. The UI's
sync and the model service's registry poll ask a handful of questions of the tracking server many
times a day, most of them on a stack where nobody looks: :class:`RestClient` asks them over plain HTTP,
with the endpoints, bodies and answers of MLflow's own client (MLflow REST API 2.0), and gives small
read-only records with the attributes of MLflow's entities. Whenever plain HTTP cannot answer as
MLflow's client would (a store that is not HTTP, MLflow's authentication or TLS settings, a refusal,
an answer it does not recognise), it raises :class:`CannotTell`, and the caller asks MLflow's client
(:class:`mlops_local.tracking.LazyClient` does that for the sync).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from mlops_local.uris import split_credentials

API = "/api/2.0/mlflow"
# What MLflow's HTTP client reads besides the URI (mlflow/utils/rest_utils.py, credentials.py): with
# any of them set, only MLflow's client sends the request as the user configured it.
CLIENT_SETTINGS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_TRACKING_INSECURE_TLS",
                   "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                   "MLFLOW_ENABLE_WORKSPACES")
CREDENTIALS_FILE = Path("~/.mlflow/credentials")
# Error codes that mean "no such thing" (an experiment, a model, an alias).
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
# mlflow.entities.ViewType's values: MLflow's client takes the same ints.
ACTIVE_ONLY, DELETED_ONLY, ALL = 1, 2, 3
_VIEW_TYPES = {ACTIVE_ONLY: "ACTIVE_ONLY", DELETED_ONLY: "DELETED_ONLY", ALL: "ALL"}
# MLflow's client leaves prompts out of a registered-model search (mlflow/prompt/registry_utils.py).
NOT_A_PROMPT = "tag.`mlflow.prompt.is_prompt` != 'true'"

T = TypeVar("T")


class CannotTell(Exception):
    """Plain HTTP has no answer MLflow's client would agree with: ask MLflow's client."""


class ApiError(Exception):
    """MLflow answered an error (``error_code`` as MLflow's client reports it: RESOURCE_DOES_NOT_EXIST...)."""

    def __init__(self, error_code: str, message: str, status: int) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code, self.status = error_code, status


def error_answers() -> tuple[type[Exception], ...]:
    """The exceptions meaning "MLflow answered an error" for either client (MLflow's only once imported)."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    return (ApiError,) if mlflow_exceptions is None else (ApiError, mlflow_exceptions.MlflowException)


def answerable(uri: str) -> bool:
    """Whether a plain HTTP request reaches the server at ``uri`` as MLflow's client would."""
    if not uri.startswith(("http://", "https://")):
        return False
    if any(os.environ.get(name, "").lower() not in ("", "false", "0") for name in CLIENT_SETTINGS):
        return False
    return not CREDENTIALS_FILE.expanduser().exists()


def call(uri: str, method: str, endpoint: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """MLflow's JSON answer to ``endpoint`` (GET: ``payload`` as the query; POST: as the body).

    Raises ApiError for MLflow's error answers, OSError when the server does not answer (or answers a
    server error: down for now) and CannotTell when the answer is not one MLflow's client would accept."""
    base, authorization = split_credentials(uri.rstrip("/"))
    url, body = f"{base}{API}/{endpoint}", None
    payload = {k: v for k, v in payload.items() if v is not None}
    if method == "GET":
        url += "?" + urllib.parse.urlencode(payload, doseq=True)
    else:
        body = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise _error(exc) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            raise CannotTell(f"TLS: {exc.reason}") from None
        raise
    except ssl.SSLError as exc:
        raise CannotTell(f"TLS: {exc}") from None
    except http.client.HTTPException as exc:  # cut off mid-answer: as a connection that failed
        raise ConnectionError(f"MLflow's answer was cut off ({type(exc).__name__})") from None
    except ValueError as exc:  # not JSON: not an MLflow server
        raise CannotTell(f"unexpected answer to {endpoint}: {exc}") from None
    if not isinstance(answer, dict):
        raise CannotTell(f"unexpected answer to {endpoint}")
    return answer


def _error(exc: urllib.error.HTTPError) -> Exception:
    """What an HTTP error answer means: MLflow's error, a server down for now, or a question for MLflow."""
    try:
        answer = json.loads(exc.read())
        error_code, message = answer.get("error_code"), str(answer.get("message", ""))
    except (ValueError, AttributeError, OSError):
        error_code, message = None, ""
    if exc.code >= 500:  # MLflow's client retries these, then fails: the caller tries again later
        return ConnectionError(f"MLflow answered HTTP {exc.code} {error_code or ''} {message[:200]}".rstrip())
    if exc.code in (401, 403) or not isinstance(error_code, str):  # credentials, or not MLflow answering
        return CannotTell(f"HTTP {exc.code}")
    return ApiError(error_code, message, exc.code)


# -- records: the attributes of MLflow's entities that the callers read ---------------------------
@dataclass(frozen=True)
class Experiment:
    """mlflow.entities.Experiment's identity and state."""

    experiment_id: str
    name: str
    lifecycle_stage: str
    artifact_location: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInfo:
    """mlflow.entities.RunInfo (times in ms since the epoch; ``end_time`` None while running)."""

    run_id: str
    experiment_id: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    run_name: str = ""
    user_id: str = ""
    artifact_uri: str = ""


@dataclass(frozen=True)
class RunData:
    """mlflow.entities.RunData: each metric's latest value, params and tags, keyed by name."""

    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True)
class Run:
    """mlflow.entities.Run."""

    info: RunInfo
    data: RunData


@dataclass(frozen=True)
class RegisteredModel:
    """mlflow.entities.model_registry.RegisteredModel's name and aliases (alias -> version)."""

    name: str
    aliases: dict[str, str]


@dataclass(frozen=True)
class ModelVersion:
    """mlflow.entities.model_registry.ModelVersion's identity and the run it came from."""

    name: str
    version: str
    run_id: str
    source: str = ""
    status: str = ""


class Page(list, Generic[T]):
    """One page of a search, as MLflow's PagedList: the items and ``token`` for the next (None: last)."""

    def __init__(self, items: Iterable[T], token: str | None) -> None:
        super().__init__(items)
        self.token = token or None


def _pairs(entries: Iterable[dict[str, Any]] | None) -> dict[str, str]:
    return {entry["key"]: entry.get("value", "") for entry in entries or ()}


def _end_time(value: object) -> int | None:
    """An end time as MLflow's client reads it: int64 (a JSON number or string); 0 or absent: None."""
    return int(value or 0) or None


def _experiment(raw: dict[str, Any]) -> Experiment:
    return Experiment(str(raw["experiment_id"]), raw.get("name", ""), raw.get("lifecycle_stage", "active"),
                      raw.get("artifact_location", ""), _pairs(raw.get("tags")))


def _run(raw: dict[str, Any]) -> Run:
    info, data = raw["info"], raw.get("data", {})
    # Metric values are numbers, or the strings "NaN", "Infinity", "-Infinity" (protobuf's JSON).
    metrics = {m["key"]: float(m.get("value", 0.0)) for m in data.get("metrics", ())}
    return Run(RunInfo(info.get("run_id") or info["run_uuid"], str(info["experiment_id"]),
                       info.get("status", "RUNNING"), int(info.get("start_time") or 0),
                       _end_time(info.get("end_time")), info.get("lifecycle_stage", "active"),
                       info.get("run_name", ""), info.get("user_id", ""), info.get("artifact_uri", "")),
               RunData(metrics, _pairs(data.get("params")), _pairs(data.get("tags"))))


def _registered_model(raw: dict[str, Any]) -> RegisteredModel:
    return RegisteredModel(raw["name"], {a["alias"]: str(a["version"]) for a in raw.get("aliases", ())})


def _model_version(raw: dict[str, Any]) -> ModelVersion:
    return ModelVersion(raw["name"], str(raw["version"]), raw.get("run_id", ""), raw.get("source", ""),
                        raw.get("status", ""))


class TrackingClient(Protocol):
    """What the sync, the champion reader and the reaper ask of MLflow: MLflow's MlflowClient answers it,
    and so does :class:`RestClient` (with the records above)."""

    def get_experiment_by_name(self, name: str) -> Any: ...
    def get_experiment(self, experiment_id: str) -> Any: ...
    def search_experiments(self, view_type: int = ..., max_results: int = ...,
                           page_token: str | None = ...) -> Any: ...
    def search_runs(self, experiment_ids: list[str], filter_string: str = ..., run_view_type: int = ...,
                    max_results: int = ..., order_by: list[str] | None = ...,
                    page_token: str | None = ...) -> Any: ...
    def get_run(self, run_id: str) -> Any: ...
    def set_tag(self, run_id: str, key: str, value: str) -> Any: ...
    def set_terminated(self, run_id: str, status: str | None = ...) -> Any: ...
    def search_registered_models(self, max_results: int = ..., page_token: str | None = ...) -> Any: ...
    def get_model_version(self, name: str, version: str) -> Any: ...


class RestClient:
    """The :class:`TrackingClient` calls over plain HTTP, no retries (the callers retry on their schedule)."""

    def __init__(self, uri: str, timeout: float) -> None:
        if not answerable(uri):
            raise CannotTell(f"{uri.split(':', 1)[0]} store or MLflow client settings")
        self.tracking_uri, self.timeout = uri, timeout

    def _call(self, method: str, endpoint: str, payload: dict[str, Any], parse: Callable[[dict], T]) -> T:
        answer = call(self.tracking_uri, method, endpoint, payload, self.timeout)
        try:
            return parse(answer)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CannotTell(f"unexpected answer to {endpoint}: {type(exc).__name__} {exc}") from None

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment called ``name`` (deleted ones too), None when there is none."""
        try:
            return self._call("GET", "experiments/get-by-name", {"experiment_name": name},
                              lambda a: _experiment(a["experiment"]))
        except ApiError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def get_experiment(self, experiment_id: str) -> Experiment:
        """Experiment ``experiment_id``."""
        return self._call("GET", "experiments/get", {"experiment_id": str(experiment_id)},
                          lambda a: _experiment(a["experiment"]))

    def search_experiments(self, view_type: int = ACTIVE_ONLY, max_results: int = 1000,
                           page_token: str | None = None) -> Page[Experiment]:
        """One page of experiments (active ones by default)."""
        return self._call("POST", "experiments/search",
                          {"view_type": _VIEW_TYPES[view_type], "max_results": max_results,
                           "page_token": page_token},
                          lambda a: Page(map(_experiment, a.get("experiments", ())),
                                         a.get("next_page_token")))

    def search_runs(self, experiment_ids: list[str], filter_string: str = "",
                    run_view_type: int = ACTIVE_ONLY, max_results: int = 1000,
                    order_by: list[str] | None = None, page_token: str | None = None) -> Page[Run]:
        """One page of runs of ``experiment_ids`` matching ``filter_string`` (MLflow's search syntax)."""
        return self._call("POST", "runs/search",
                          {"experiment_ids": [str(e) for e in experiment_ids], "filter": filter_string,
                           "run_view_type": _VIEW_TYPES[run_view_type], "max_results": max_results,
                           "order_by": order_by or None, "page_token": page_token},
                          lambda a: Page(map(_run, a.get("runs", ())), a.get("next_page_token")))

    def get_run(self, run_id: str) -> Run:
        """Run ``run_id`` (ApiError RESOURCE_DOES_NOT_EXIST when there is none)."""
        return self._call("GET", "runs/get", {"run_id": run_id, "run_uuid": run_id}, lambda a: _run(a["run"]))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """Set tag ``key`` of a run."""
        self._call("POST", "runs/set-tag", {"run_id": run_id, "run_uuid": run_id, "key": key,
                                             "value": str(value)}, lambda a: None)

    def set_terminated(self, run_id: str, status: str | None = None) -> None:
        """End a run now with ``status`` (FINISHED by default), as MLflow's client does."""
        self._call("POST", "runs/update", {"run_id": run_id, "run_uuid": run_id,
                                           "status": status or "FINISHED",
                                           "end_time": int(time.time() * 1000)}, lambda a: None)

    def search_registered_models(self, max_results: int = 100,
                                 page_token: str | None = None) -> Page[RegisteredModel]:
        """One page of registered models (prompts left out, as MLflow's client leaves them)."""
        return self._call("GET", "registered-models/search",
                          {"filter": NOT_A_PROMPT, "max_results": max_results, "page_token": page_token},
                          lambda a: Page(map(_registered_model, a.get("registered_models", ())),
                                         a.get("next_page_token")))

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        """Version ``version`` of registered model ``name``."""
        return self._call("GET", "model-versions/get", {"name": name, "version": str(version)},
                          lambda a: _model_version(a["model_version"]))

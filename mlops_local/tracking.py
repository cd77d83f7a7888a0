"""Everything that talks to MLflow: bounded clients, server-down fallback, experiments, artifacts.

MLflow itself is imported only where an MLflow client is made: the UI process's sync asks over plain
HTTP through :class:`LazyClient` until a question needs MLflow's client.

When the tracking URI is the local server (the default) and it is not running, runs go straight into
the same store the server uses (the SQLite file, or MLOPS_BACKEND_STORE_URI's PostgreSQL), with
artifacts under the same directory the server serves (``mlflow-artifacts:/...`` URIs map to
``<MLOPS_HOME>/mlflow/artifacts/...`` either way), so they appear in the MLflow UI as soon as the
server is started. Any other URI that does not answer fails within seconds with a clear message.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.health import probe
from mlops_local.restclient import ACTIVE_ONLY, CannotTell, RestClient, TrackingClient
from mlops_local.settings import Settings
from mlops_local.store import check_postgres
from mlops_local.uris import link_base, mask_credentials

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

ARTIFACTS_SCHEME = "mlflow-artifacts:"
_HEALTH_TIMEOUT_CAP = 2.0
# MLflow 3's UI shows an experiment as a GenAI one (traces, Assistant) unless told otherwise: the tag
# marks ours as model training, and links carry the UI's own workflowType parameter, which in MLflow
# 3.17 decides the view (its default is genai).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
UI_VIEW_QUERY = "?workflowType=machine_learning"


def bounded_client_env(settings: Settings | None = None) -> dict[str, str]:
    """MLflow HTTP client bounds: few quick retries and a per-request timeout (defaults: 7 and 120 s)."""
    timeout = settings.http_timeout if settings is not None else 5.0
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an int for MLflow
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        # Uploading a large model to a busy server can take a while; connecting never does (health probe).
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(10, math.ceil(timeout * 2))),
        # Otherwise every finished run prints two lines to stdout (breaking --json) after one more GET.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }


def configure(settings: Settings | None = None) -> None:
    """Apply :func:`bounded_client_env` to ``os.environ`` (values the user set explicitly win).

    MLflow's HTTP client reads its retries and timeouts from the environment on every request, and
    offers no per-client setting: this is the only place the project sets them, called by
    :func:`new_client`, the one way the project builds an MLflow client."""
    for key, value in bounded_client_env(settings).items():
        os.environ.setdefault(key, value)


def new_client(uri: str, settings: Settings | None = None) -> MlflowClient:
    """A bounded MLflow client on ``uri`` for runs and the registry alike (no server-down fallback:
    see :func:`connect` for that)."""
    from mlflow.tracking import MlflowClient  # MLflow, pandas, pyarrow: only where a client is made

    configure(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def request_timeout(settings: Settings | None = None) -> float:
    """Seconds one request to MLflow may take, as MLflow's client is bounded (the user's
    MLFLOW_HTTP_REQUEST_TIMEOUT wins)."""
    key = "MLFLOW_HTTP_REQUEST_TIMEOUT"
    return float(os.environ.get(key) or bounded_client_env(settings)[key])


class LazyClient:
    """A :class:`TrackingClient` that asks over plain HTTP (:mod:`mlops_local.restclient`) while it can, so
    an idle process holds no MLflow, pandas or pyarrow; from the first question plain HTTP cannot answer
    as MLflow's client would, MLflow's client (``connect``, called then) answers it and all later ones."""

    def __init__(self, uri: str, timeout: float, connect: Callable[[], TrackingClient]) -> None:
        self.tracking_uri = uri
        self._connect = connect
        self._mlflow: TrackingClient | None = None
        self._lock = threading.Lock()
        try:
            self._rest: RestClient | None = RestClient(uri, timeout)
        except CannotTell as exc:
            log.debug("MLflow's client answers %s (%s)", uri, exc)
            self._rest = None

    @property
    def mlflow(self) -> TrackingClient:
        """MLflow's client (made on first use)."""
        with self._lock:
            if self._mlflow is None:
                self._mlflow = self._connect()
            return self._mlflow

    @property
    def plain(self) -> bool:
        """Whether plain HTTP still answers (MLflow's client was not needed)."""
        return self._rest is not None

    def _ask(self, question: Callable[[TrackingClient], T]) -> T:
        rest = self._rest
        if rest is not None:
            try:
                return question(rest)
            except CannotTell as exc:
                log.info("MLflow's client answers from now on: plain HTTP cannot (%s)", exc)
                self._rest = None
        return question(self.mlflow)

    def get_experiment_by_name(self, name: str) -> Any:
        return self._ask(lambda c: c.get_experiment_by_name(name))

    def get_experiment(self, experiment_id: str) -> Any:
        return self._ask(lambda c: c.get_experiment(experiment_id))

    def search_experiments(self, view_type: int = ACTIVE_ONLY, max_results: int = 1000,
                           page_token: str | None = None) -> Any:
        return self._ask(lambda c: c.search_experiments(view_type=view_type, max_results=max_results,
                                                        page_token=page_token))

    def search_runs(self, experiment_ids: list[str], filter_string: str = "",
                    run_view_type: int = ACTIVE_ONLY, max_results: int = 1000,
                    order_by: list[str] | None = None, page_token: str | None = None) -> Any:
        return self._ask(lambda c: c.search_runs(experiment_ids, filter_string, run_view_type=run_view_type,
                                                 max_results=max_results, order_by=order_by,
                                                 page_token=page_token))

    def get_run(self, run_id: str) -> Any:
        return self._ask(lambda c: c.get_run(run_id))

    def set_tag(self, run_id: str, key: str, value: str) -> Any:
        return self._ask(lambda c: c.set_tag(run_id, key, value))

    def set_terminated(self, run_id: str, status: str | None = None) -> Any:
        return self._ask(lambda c: c.set_terminated(run_id, status))

    def search_registered_models(self, max_results: int = 100, page_token: str | None = None) -> Any:
        return self._ask(lambda c: c.search_registered_models(max_results=max_results, page_token=page_token))

    def get_model_version(self, name: str, version: str) -> Any:
        return self._ask(lambda c: c.get_model_version(name, version))


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_reachable(settings: Settings, uri: str | None = None) -> bool:
    """Whether the tracking server answers GET /health within a couple of seconds (with the URI's
    credentials, if it has any)."""
    uri = uri or settings.effective_tracking_uri
    if not _is_http(uri):
        return True
    healthy, _ = probe(uri.rstrip("/") + "/health", timeout=min(_HEALTH_TIMEOUT_CAP, settings.http_timeout))
    return healthy


def is_local_server(settings: Settings, uri: str) -> bool:
    """Whether ``uri`` is this installation's own MLflow server (MLOPS_HOST:MLOPS_MLFLOW_PORT)."""
    parsed = urllib.parse.urlsplit(uri)
    local_hosts = {"localhost", "127.0.0.1", "::1", settings.host.strip("[]")}
    return (parsed.scheme == "http" and (parsed.hostname or "") in local_hosts
            and parsed.port == settings.mlflow_port)


@dataclass(frozen=True)
class Connection:
    """A client plus where it writes; ``note`` says why it is not the configured server (else None)."""

    client: MlflowClient
    tracking_uri: str
    configured_uri: str
    note: str | None = None


def connect(settings: Settings) -> Connection:
    """A bounded client on the configured URI, or on the local store when the local server is down."""
    uri = settings.effective_tracking_uri
    note = None
    if _is_http(uri) and not server_reachable(settings, uri):
        if not is_local_server(settings, uri):
            raise ServiceUnavailable(
                f"MLflow tracking server {mask_credentials(uri)} is not reachable (from "
                "MLFLOW_TRACKING_URI); start it, or unset MLFLOW_TRACKING_URI to use the local store"
            )
        check_postgres(settings)  # seconds, not MLflow's two minutes of retries
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
        note = (f"MLflow server at {mask_credentials(uri)} is not running; writing to the local store "
                f"{settings.store_label} directly (start it with `mlops-local serve mlflow` to see "
                "the runs)")
        log.warning(note)
        uri = settings.backend_store_uri
    return Connection(new_client(uri, settings), uri,
                      settings.effective_tracking_uri, note)


def fallback_client(settings: Settings, uri: str) -> MlflowClient | None:
    """A client on the local store when ``uri`` is this installation's server and it has gone away
    (the store is the server's own: what it wrote is there); else None."""
    if not _is_http(uri) or not is_local_server(settings, uri) or server_reachable(settings, uri):
        return None
    return new_client(settings.backend_store_uri, settings)


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a request that never got an answer."""
    import requests

    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and not any(cur is s for s in seen):
        seen.append(cur)
        if isinstance(cur, (requests.ConnectionError, ConnectionError)):
            return True
        message = getattr(cur, "message", None)
        if isinstance(message, str) and message.startswith("API request") \
                and "failed with exception" in message:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def get_client(settings: Settings) -> MlflowClient:
    """A bounded MlflowClient (see :func:`connect` for the server-down fallback)."""
    return connect(settings).client


def uses_local_store(client: MlflowClient, settings: Settings) -> bool:
    """Whether ``client`` writes directly to this installation's store (no server in between)."""
    return client.tracking_uri == settings.backend_store_uri


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created when missing; UserError when it was deleted."""
    if not name or not name.strip():
        raise UserError("experiment name must not be empty")
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
        except Exception:  # created concurrently by another process: use theirs
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise UserError(f"experiment {name!r} was deleted in MLflow; restore it in the MLflow UI "
                        "(or `mlflow experiments restore`) or choose another experiment name")
    return experiment.experiment_id


def experiment_for(client: MlflowClient, settings: Settings, name: str) -> str:
    """Like :func:`ensure_experiment`; with no server in between, artifacts never default to ./mlruns.

    On this installation's store new experiments get the server's layout; on any other database
    store (MLflow would put artifacts under the current directory) they go beside the database.
    """
    location = None
    if uses_local_store(client, settings):
        location = f"{ARTIFACTS_SCHEME}/{uuid.uuid4().hex}"
    elif client.tracking_uri.startswith("sqlite:///"):
        db = Path(client.tracking_uri.removeprefix("sqlite:///")).resolve()
        location = (db.parent / "artifacts" / uuid.uuid4().hex).as_uri()
    return ensure_experiment(client, name, artifact_location=location)


def local_artifact_dir(settings: Settings, artifact_uri: str) -> Path | None:
    """Where a ``mlflow-artifacts:/...`` URI lives on disk (the server's --artifacts-destination)."""
    if not artifact_uri.startswith(ARTIFACTS_SCHEME):
        return None
    path = urllib.parse.urlsplit(artifact_uri).path.lstrip("/")
    return settings.artifacts_dir / path


def artifact_repository(client: MlflowClient, settings: Settings, artifact_uri: str):
    """The repository for a run's ``artifact_uri``, without the extra get_run MLflow's client does.

    On the local store, ``mlflow-artifacts:/`` URIs are written straight into the directory the
    server serves them from.
    """
    target = local_artifact_dir(settings, artifact_uri) if uses_local_store(client, settings) else None
    if target is not None:
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        target.mkdir(parents=True, exist_ok=True)
        return LocalArtifactRepository(str(target))
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(artifact_uri, tracking_uri=client.tracking_uri)


def log_artifacts(client: MlflowClient, settings: Settings, artifact_uri: str, local_dir: Path,
                  artifact_path: str | None = None) -> None:
    """Upload a directory as run artifacts (straight to disk when there is no server in between)."""
    artifact_repository(client, settings, artifact_uri).log_artifacts(str(local_dir), artifact_path)


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    """Link to the run in the MLflow UI (no user:password from the tracking URI in it)."""
    uri = link_base(settings.effective_tracking_uri)
    base = uri.rstrip("/") if _is_http(uri) else settings.mlflow_url
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{UI_VIEW_QUERY}"

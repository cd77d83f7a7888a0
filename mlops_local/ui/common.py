"""Helpers shared by the page scripts: settings, runtime, clients, service status, links, error display."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pandas as pd
import streamlit as st
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_local import runs as runs_module
from mlops_local import tracking
from mlops_local.alerts.firing import FiringAlert, firing_alerts, worst_severity
from mlops_local.errors import ServiceUnavailable, UserError
from mlops_local.health import ServiceStatus, check
from mlops_local.metrics.promapi import PrometheusClient
from mlops_local.runtime import Runtime, ensure_runtime
from mlops_local.settings import Settings, get_settings
from mlops_local.uris import link_base, mask_credentials

log = logging.getLogger(__name__)

# Material icons and badges ship with Streamlit: they render without emoji fonts.
STATE_BADGE = {"up": "green", "down": "orange", "not installed": "gray", "no model": "blue"}
UPLOAD_TYPES = ["csv", "tsv", "txt", "parquet"]
GRAFANA_MISSING = "Grafana is not installed (see README)"


def settings() -> Settings:
    """The process's settings (read from the environment once)."""
    return get_settings()


def runtime() -> Runtime:
    """The process-wide runtime; started by `serve ui`, or here on first use under AppTest."""
    return ensure_runtime(get_settings())


_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None
warmed_in_s: float | None = None  # how long the warm-up took, once it is done


def warm_training_stack() -> threading.Thread:
    """Start, once per process, a background warm-up of what a first training pays once.

    The UI's first training took about 1.2 s longer than the next ones (skops' import, sklearn's lazy
    imports, MLflow's first model save). Started when the first page is shown, the warm-up (about
    0.9 s) is done before a user has picked a model. Not when the process starts: the idle stack
    stays about 75 MB lighter until someone opens the UI, and Streamlit's own start is not slowed.
    """
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm, name="mlops-warm-training", daemon=True)
            _warm_thread.start()
        return _warm_thread


def _warm() -> None:
    global warmed_in_s
    started = time.perf_counter()
    try:
        from mlops_local.ml.warmup import warm_up

        warm_up(prime_models=True)
    except Exception:  # an optimisation only: the first training pays instead
        log.debug("warming up the training stack failed", exc_info=True)
        return
    warmed_in_s = time.perf_counter() - started
    log.info("training stack warmed up in %.2f s", warmed_in_s)


@st.cache_data(ttl=3, show_spinner=False)
def service_statuses(_settings: Settings) -> list[ServiceStatus]:
    """Health of every service, cached for a few seconds so reruns stay fast."""
    return check(_settings, timeout=0.5)


def grafana_status() -> ServiceStatus:
    """Grafana's health from the cached probe (a link to it is shown only when it is up)."""
    return next(s for s in service_statuses(settings()) if s.name == "grafana")


def grafana_note(status: ServiceStatus) -> str:
    """The one line shown instead of a Grafana link when Grafana does not answer."""
    if status.state == "not installed":
        return GRAFANA_MISSING
    return f"Grafana is not answering at {status.url}: start it with `mlops-local serve grafana`."


def _service_link(status: ServiceStatus) -> str:
    # MLflow's home page opens its GenAI view; its experiments list in the ML view is what we track.
    if status.name == "model":  # the service has no page at /: what it serves is the useful link
        return f"{status.url}/version"
    return f"{status.url}/#/experiments{tracking.UI_VIEW_QUERY}" if status.name == "mlflow" else status.url


def sidebar_status(statuses: list[ServiceStatus]) -> None:
    """Live service status, shown on every page; a link only to a service that answers (no dead links)."""
    with st.sidebar:
        st.caption("Services")
        for s in statuses:
            if s.name == "grafana" and not s.up:
                st.caption(grafana_note(s))
                continue
            label = "starting" if (s.state == "down" and s.required) else s.state
            name = f"[{s.name}]({_service_link(s)})" if s.up else s.name
            st.markdown(f"{name} :{STATE_BADGE.get(s.state, 'gray')}-badge[{label}]",
                        help=None if s.up else f"{s.url}: {s.detail}")


SEVERITY_BADGE = {"critical": "red", "warning": "orange", "info": "blue"}
ALERT_PROBE_TIMEOUT = 0.5  # seconds; the sidebar of every page waits at most this long for Prometheus


@st.cache_data(ttl=5, show_spinner=False)
def alerts_firing(prometheus_url: str, timeout: float, up: bool = True) -> list[FiringAlert] | None:
    """Firing alerts, cached a few seconds for every session; None when Prometheus does not answer."""
    if not up:
        return None
    probe = PrometheusClient(prometheus_url, timeout)
    try:
        return firing_alerts(probe)
    except (ServiceUnavailable, UserError) as exc:
        log.debug("no alerts from Prometheus: %s", exc)
        return None


def sidebar_alerts(statuses: list[ServiceStatus]) -> None:
    """Firing alerts on every page: count and worst severity; a quiet line when none or unknown."""
    up = any(s.name == "prometheus" and s.up for s in statuses)
    current = settings()
    alerts = alerts_firing(current.prometheus_url, min(current.http_timeout, ALERT_PROBE_TIMEOUT), up)
    with st.sidebar:
        if alerts is None:
            st.caption("Alerts: unknown (Prometheus is not answering)")
        elif not alerts:
            st.caption("Alerts: none firing")
        else:
            worst = worst_severity(alerts) or "none"
            names = ", ".join(dict.fromkeys(a.name for a in alerts))
            st.markdown(f":{SEVERITY_BADGE.get(worst, 'gray')}-badge[:material/notifications_active: "
                        f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''} firing, worst: {worst}]",
                        help=f"{names}. Details on the Monitoring page.")


@st.cache_resource(ttl=30, show_spinner=False)
def _client(tracking_uri: str, _settings: Settings) -> MlflowClient:
    return tracking.get_client(_settings)


def client() -> MlflowClient:
    """A bounded MLflow client shared by every session (MlflowClient is thread-safe)."""
    current = settings()
    return _client(current.effective_tracking_uri, current)


def prometheus() -> PrometheusClient:
    """A Prometheus API client for the configured server (cheap; one HTTP session per thread)."""
    return PrometheusClient.from_settings(settings())


@contextmanager
def user_errors(what: str = "") -> Iterator[None]:
    """Show a UserError, an unreachable service or an MLflow refusal as one red line, not a traceback.

    Code after the failing line inside the ``with`` block is skipped; the rest of the page renders.
    """
    try:
        yield
    except UserError as exc:  # includes ServiceUnavailable
        st.error(f"{what}{': ' if what else ''}{exc}")
    except MlflowException as exc:
        message = str(exc.message)
        if message.startswith("API request") or "Max retries" in message:
            message = (f"MLflow is not reachable at {settings().effective_tracking_uri}; start it with "
                       "`mlops-local serve mlflow` (or `bin/start`). Detail: " + message[:300])
        message = mask_credentials(message)
        st.error(f"{what}{': ' if what else ''}{message}")
        log.warning("MLflow error on a page: %s", message)


def mlflow_run_url(experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return tracking.run_url(settings(), experiment_id, run_id)


def mlflow_model_url(name: str, version: str | int) -> str:
    """A registered model version's page in the MLflow UI."""
    current = settings()
    uri = link_base(current.effective_tracking_uri)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else current.mlflow_url
    return f"{base}/#/models/{urllib.parse.quote(name, safe='')}/versions/{version}{tracking.UI_VIEW_QUERY}"


def prometheus_graph_url(expr: str, range_input: str = "1h") -> str:
    """Prometheus' graph page for ``expr``."""
    query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_input})
    return f"{settings().prometheus_url}/graph?{query}"


def grafana_dashboard_url(variables: Mapping[str, str]) -> str:
    """The provisioned Grafana dashboard with its variables set."""
    from mlops_local.grafana import DASHBOARD_UID

    query = urllib.parse.urlencode({f"var-{k}": v for k, v in variables.items()})
    return f"{settings().grafana_url}/d/{DASHBOARD_UID}?{query}"


def read_upload(uploaded: object, state_key: str) -> pd.DataFrame:
    """The uploaded file as a table, read once per upload and kept in this session; UserError otherwise."""
    from mlops_local.ml.datasets import read_table

    current = settings()
    limit_mb = current.upload_limit_mb
    size = getattr(uploaded, "size", 0)
    name = getattr(uploaded, "name", "upload")
    if size > limit_mb * 1024 * 1024:
        what = ("for a dataset (MLOPS_MAX_DATASET_MB)" if current.max_dataset_mb < current.max_upload_mb
                else "for an upload (MLOPS_MAX_UPLOAD_MB)")  # the cap that binds
        raise UserError(f"{name} is {size / 1024 / 1024:.1f} MB, more than the {limit_mb} MB allowed {what}")
    file_id = getattr(uploaded, "file_id", None) or f"{name}:{size}"
    cached = st.session_state.get(state_key)
    if isinstance(cached, tuple) and cached[0] == file_id:
        return cached[1]
    frame = read_table(uploaded.getvalue(), filename=name)
    st.session_state[state_key] = (file_id, frame)
    return frame


# -- cached MLflow reads (shared by sessions; cleared after a training or a registration) ----------

@st.cache_data(ttl=15, show_spinner=False, max_entries=64)
def experiment_names(tracking_uri: str) -> list[str]:
    """Names of the experiments on the tracking server (``tracking_uri`` keys the cache)."""
    return runs_module.experiment_names(client())


@st.cache_data(ttl=15, show_spinner=False, max_entries=64)
def runs_page(tracking_uri: str, experiment: str, **query: object) -> runs_module.RunsPage:
    """One page of runs of ``experiment`` (by name) with the given filters, or an empty page."""
    exp_id = runs_module.experiment_id(client(), experiment)
    if exp_id is None:
        return runs_module.runs_to_frame([])
    return runs_module.runs_page(client(), exp_id, **query)


def clear_run_caches() -> None:
    """Forget cached runs and experiments (after a new run or a registration)."""
    experiment_names.clear()
    runs_page.clear()
    registered_choices.clear()


@st.cache_data(ttl=15, show_spinner=False, max_entries=16)
def registered_choices(tracking_uri: str) -> list[str]:
    """'name@alias' and 'name/version' choices of the model registry."""
    return runs_module.registered_choices(client())


@st.cache_resource(ttl=600, max_entries=8, show_spinner="Loading the model…")
def loaded_model(pinned_uri: str, tracking_uri: str) -> tuple[object, list]:
    """(PyFuncModel, its input fields) for a pinned model URI, shared by sessions (predict is thread-safe)."""
    from mlops_local.ml import predict

    model = predict.load_model(pinned_uri, client())
    return model, predict.input_fields(model)

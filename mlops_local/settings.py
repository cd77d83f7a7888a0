"""The one settings object: every port, path and URI, read from the environment once."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from mlops_local.uris import mask_credentials

APP_NAME = "mlops-local"


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: attribute, environment variable, default, parser, help."""

    attr: str
    env: str
    default: object
    parse: Callable[[str], object]
    help: str
    secret: bool = False


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return port


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0, got {number}")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0, got {number}")
    return number


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise ValueError(f"must be between 0 and 1 (exclusive), got {number}")
    return number


def _http_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {mask_credentials(value)!r}")
    return value.strip()


STORE_SCHEMES = ("postgresql", "postgresql+psycopg")


def _store_uri(value: str) -> str:
    # Another SQLite file is not offered: the store's folder, backup and recovery assume MLOPS_HOME's.
    if value.partition("://")[0].lower() not in STORE_SCHEMES or "://" not in value:
        raise ValueError("must be postgresql://user@host:port/db (unset it for the SQLite store in "
                         "MLOPS_HOME)")
    return value


_CLIENT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _client_name(value: str) -> str:
    # A Prometheus label value and an MLflow tag: the charset exported labels keep (metrics/labels.py).
    if not _CLIENT_NAME.fullmatch(value.strip()):
        raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-' (it names this machine in "
                         "Prometheus)")
    return value.strip()


def _default_client_name() -> str:
    """This machine's short host name, in the label charset."""
    short = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", short)[:64] or "unknown"


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "MLOPS_HOME", _default_home, lambda v: Path(v).expanduser(),
            "Data directory: MLflow store and artifacts, Prometheus TSDB, Grafana data, exports."),
    Setting("host", "MLOPS_HOST", "127.0.0.1", str,
            "Address every service binds to. Keep 127.0.0.1 unless you mean to expose the stack."),
    Setting("ui_port", "MLOPS_UI_PORT", 8501, _port, "Streamlit UI port."),
    Setting("mlflow_port", "MLOPS_MLFLOW_PORT", 8080, _port, "MLflow tracking server and UI port."),
    Setting("prometheus_port", "MLOPS_PROMETHEUS_PORT", 9090, _port, "Prometheus port."),
    Setting("grafana_port", "MLOPS_GRAFANA_PORT", 3000, _port, "Grafana port (when Grafana is installed)."),
    Setting("metrics_port", "MLOPS_METRICS_PORT", 8001, _port,
            "/metrics endpoint served by a thread inside the UI process."),
    Setting("serve_port", "MLOPS_SERVE_PORT", 8002, _port,
            "`serve model`: model scoring service port (/invocations, /health, /version, /metrics)."),
    Setting("serve_model", "MLOPS_SERVE_MODEL", None, str,
            "`serve model`: registered model to serve. Default: the most recently updated registered "
            "model that carries MLOPS_SERVE_ALIAS."),
    Setting("serve_alias", "MLOPS_SERVE_ALIAS", "champion", str,
            "`serve model`: alias served (models:/<name>@<alias>); moving it swaps the model live."),
    Setting("serve_poll_interval", "MLOPS_SERVE_POLL_INTERVAL", 5.0, _positive_float,
            "`serve model`: seconds between registry checks for a moved alias."),
    Setting("serve_max_body_mb", "MLOPS_SERVE_MAX_BODY_MB", 10, _positive_int,
            "`serve model`: largest request body accepted, in MB (larger: HTTP 413)."),
    Setting("drift_window", "MLOPS_DRIFT_WINDOW", 1000, _non_negative_int,
            "`serve model`: rows in the sliding window compared with the training profile for drift "
            "(PSI); 0 turns drift off."),
    Setting("tracking_uri", "MLFLOW_TRACKING_URI", None, str,
            "MLflow tracking URI. Default: the local server at MLOPS_HOST:MLOPS_MLFLOW_PORT."),
    Setting("client_name", "MLOPS_CLIENT_NAME", _default_client_name, _client_name,
            "This machine's name on a shared tracking server: tagged on every run it trains "
            "(mlops.client) and exported as the `client` label of mlops_client_runs_total. Default: the "
            "short host name."),
    Setting("backend_store", "MLOPS_BACKEND_STORE_URI", None, _store_uri,
            "MLflow store of `serve mlflow` (and of training while the local server is down): "
            "postgresql://user@host:port/db for a team (extra `postgres`). Default: SQLite in MLOPS_HOME.",
            secret=True),
    Setting("grafana_admin_password", "MLOPS_GRAFANA_ADMIN_PASSWORD", None, str,
            "Grafana admin password. Default: generated once, stored 0600 in MLOPS_HOME/grafana.",
            secret=True),
    Setting("scrape_interval", "MLOPS_SCRAPE_INTERVAL", 5.0, _positive_float,
            "Seconds between Prometheus scrapes of /metrics."),
    Setting("sync_interval", "MLOPS_SYNC_INTERVAL", 5.0, _positive_float,
            "Seconds between the exporter's incremental syncs from MLflow."),
    Setting("max_series", "MLOPS_MAX_SERIES", 500, _positive_int,
            "Cap on {experiment, dataset, model} combinations exported (oldest evicted)."),
    Setting("max_upload_mb", "MLOPS_MAX_UPLOAD_MB", 200, _positive_int,
            "Largest dataset upload accepted by the UI, in MB."),
    Setting("max_dataset_mb", "MLOPS_MAX_DATASET_MB", 1024, _positive_int,
            "Largest dataset file read (CLI path or UI upload), in MB; larger files are refused before "
            "reading. Reading a CSV takes up to about 3x its size in memory."),
    Setting("http_timeout", "MLOPS_HTTP_TIMEOUT", 5.0, _positive_float,
            "Seconds before a call to MLflow or Prometheus gives up (no call hangs)."),
    Setting("prometheus_remote_write_url", "MLOPS_PROMETHEUS_REMOTE_WRITE_URL", None, _http_url,
            "Also send every sample to this remote_write endpoint (Thanos, Mimir, VictoriaMetrics) for "
            "long-term storage; user:password@ in it becomes basic auth."),
    Setting("prometheus_admin_api", "MLOPS_PROMETHEUS_ADMIN_API", False, _bool,
            "Turn on Prometheus' admin API (loopback only) so `backup` takes a TSDB snapshot instead of "
            "copying the live folder. Off by default: any web page could POST to it (delete series)."),
    Setting("alert_r2_drop", "MLOPS_ALERT_R2_DROP", 0.02, _fraction,
            "ModelQualityRegression: how far a model's latest R2 may fall below the best R2 of its "
            "dataset before the alert fires."),
    Setting("alert_p99_ms", "MLOPS_ALERT_P99_MS", 100.0, _positive_float,
            "ServingLatencyHigh: p99 scoring latency (ms) of the model service above which it fires."),
    Setting("alert_for_scale", "MLOPS_ALERT_FOR_SCALE", 1.0, _non_negative_float,
            "Multiplies every alert's `for:` duration (1 = as documented in Alerts; 0 = fire at the "
            "first evaluation)."),
    Setting("alertmanager_port", "MLOPS_ALERTMANAGER_PORT", 9093, _port,
            "`serve alertmanager` port (when Alertmanager is installed); Prometheus sends alerts there."),
)

_BY_ATTR = {s.attr: s for s in SETTINGS}


class SettingsError(ValueError):
    """An environment variable holds a value the settings cannot use."""


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a service bound to ``host``."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


@dataclass(frozen=True)
class Settings:
    """Effective configuration of one mlops-local installation."""

    home: Path
    host: str = "127.0.0.1"
    ui_port: int = 8501
    mlflow_port: int = 8080
    prometheus_port: int = 9090
    grafana_port: int = 3000
    metrics_port: int = 8001
    serve_port: int = 8002
    serve_model: str | None = None
    serve_alias: str = "champion"
    serve_poll_interval: float = 5.0
    serve_max_body_mb: int = 10
    drift_window: int = 1000
    tracking_uri: str | None = None
    backend_store: str | None = None
    grafana_admin_password: str | None = None
    scrape_interval: float = 5.0
    sync_interval: float = 5.0
    max_series: int = 500
    max_upload_mb: int = 200
    max_dataset_mb: int = 1024
    http_timeout: float = 5.0
    prometheus_admin_api: bool = False
    prometheus_remote_write_url: str | None = None
    alert_r2_drop: float = 0.02
    alert_p99_ms: float = 100.0
    alert_for_scale: float = 1.0
    alertmanager_port: int = 9093
    client_name: str = field(default_factory=_default_client_name)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``), noting where each came from."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            if raw not in (None, ""):
                try:
                    values[setting.attr] = setting.parse(raw)
                except ValueError as exc:
                    shown = mask_credentials(raw)
                    raise SettingsError(f"{setting.env}={shown!r} is not valid: {exc}") from None
                sources[setting.attr] = f"env {setting.env}"
            else:
                default = setting.default
                values[setting.attr] = default() if callable(default) else default
                sources[setting.attr] = "default"
        return cls(**values, sources=sources)

    def replace(self, **changes: object) -> Settings:
        """A copy with some values changed (used by tests and by `--port`-style options)."""
        sources = dict(self.sources)
        sources.update({k: "override" for k in changes})
        return dataclasses.replace(self, **changes, sources=sources)

    @property
    def upload_limit_mb(self) -> int:
        """Largest UI upload: an uploaded dataset is a dataset, so MLOPS_MAX_DATASET_MB caps it too."""
        return min(self.max_upload_mb, self.max_dataset_mb)

    # -- derived paths: everything lives under one directory ---------------------------------
    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def backend_store_uri(self) -> str:
        """MLflow's store: MLOPS_BACKEND_STORE_URI, else the SQLite file in MLOPS_HOME."""
        return self.backend_store or f"sqlite:///{self.mlflow_db}"

    @property
    def store_is_sqlite(self) -> bool:
        """Whether MLflow's store is the SQLite file in MLOPS_HOME (no MLOPS_BACKEND_STORE_URI)."""
        return self.backend_store is None

    @property
    def store_label(self) -> str:
        """The store's URI for messages and logs: password masked."""
        return mask_credentials(self.backend_store_uri)

    @property
    def artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def prometheus_dir(self) -> Path:
        return self.home / "prometheus"

    @property
    def alertmanager_dir(self) -> Path:
        return self.home / "alertmanager"

    @property
    def grafana_dir(self) -> Path:
        return self.home / "grafana"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def tools_dir(self) -> Path:
        return self.home / "tools"

    # -- derived URLs ------------------------------------------------------------------------
    def _url(self, port: int) -> str:
        return f"http://{_connect_host(self.host)}:{port}"

    @property
    def mlflow_url(self) -> str:
        return self._url(self.mlflow_port)

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or self.mlflow_url

    @property
    def prometheus_url(self) -> str:
        return self._url(self.prometheus_port)

    @property
    def alertmanager_url(self) -> str:
        return self._url(self.alertmanager_port)

    @property
    def grafana_url(self) -> str:
        return self._url(self.grafana_port)

    @property
    def ui_url(self) -> str:
        return self._url(self.ui_port)

    @property
    def metrics_url(self) -> str:
        return self._url(self.metrics_port) + "/metrics"

    @property
    def metrics_target(self) -> str:
        """host:port Prometheus scrapes."""
        return f"{_connect_host(self.host)}:{self.metrics_port}"

    @property
    def serve_url(self) -> str:
        return self._url(self.serve_port)

    @property
    def serve_target(self) -> str:
        """host:port Prometheus scrapes for the model service."""
        return f"{_connect_host(self.host)}:{self.serve_port}"

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, effective value, source) rows for `mlops-local config`; secrets masked."""
        rows = []
        for setting in SETTINGS:
            value = getattr(self, setting.attr)
            source = self.sources.get(setting.attr, "default")
            if setting.attr == "prometheus_remote_write_url" and value is not None:
                value = mask_credentials(value)
            elif setting.attr == "tracking_uri":
                value = (mask_credentials(value) if value is not None
                         else f"{self.effective_tracking_uri} (local server)")
            elif setting.attr == "backend_store":
                value = self.store_label if value is not None else f"{self.backend_store_uri} (SQLite)"
            elif setting.attr == "serve_model" and value is None:
                value = f"(most recently updated model with alias {self.serve_alias})"
            elif setting.secret:
                value = "(set)" if value else "(generated on first Grafana start)"
            rows.append((setting.env, str(value), source))
        return rows


def setting(attr: str) -> Setting:
    """The table row for one attribute."""
    return _BY_ATTR[attr]


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use only."""
    return Settings.from_env()

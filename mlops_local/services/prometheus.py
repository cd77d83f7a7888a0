"""`serve prometheus`: find (or install) the real Prometheus binary, render its config, run it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from mlops_local.alerts import render
from mlops_local.alerts.render import duration  # also the scrape interval and lookback
from mlops_local.errors import UserError
from mlops_local.services import alertmanager as alertmanager_service
from mlops_local.services.process import child_env, ensure_port_free, exec_service
from mlops_local.settings import Settings

log = logging.getLogger(__name__)

# The pinned official release, checked against the sha256 published with it.
PINNED_VERSION = "2.37.1"
PINNED_SHA256 = {
    "linux-amd64": "753f66437597cf52ada98c2f459aa8c03745475c249c9f2b40ac7b3919131ba6",
    "linux-arm64": "b59a66fb5c7ec5acf6bf426793528a5789a1478a0dad8c64edc2843caf31b1b8",
    "darwin-amd64": "e03a43d98955ac3500f57353ea74b5df829074205f195ea6b3b88f55c4575c79",
    "darwin-arm64": "eb8a174c82a0fb6c84e81d9a73214318fb4a605115ad61505d7883d02e5a6f52",
}
RELEASE_URL = (
    "https://github.com/prometheus/prometheus/releases/download/"
    "v{version}/prometheus-{version}.{platform}.tar.gz"
)
DOWNLOAD_TIMEOUT = 10.0


RULES_DIR = "rules"  # under MLOPS_HOME/prometheus, next to the rendered prometheus.yml


def render_config(settings: Settings, alertmanager: bool = False) -> str:
    """prometheus.yml for these settings: the mlops-local job, the model service, Prometheus itself, the
    alert rules, and (when Alertmanager is installed) where to send alerts."""
    interval = duration(settings.scrape_interval)
    own = f"{settings.metrics_target.rsplit(':', 1)[0]}:{settings.prometheus_port}"
    text = (
        "# Scrape config for mlops-local. `mlops-local serve prometheus` renders this layout for the\n"
        "# effective settings into MLOPS_HOME/prometheus, with the alert rules in rules/ next to it.\n"
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "\n"
        "rule_files:\n"
        f"  - {RULES_DIR}/{render.RULES_FILE}\n"
        "\n"
        "scrape_configs:\n"
        "  - job_name: mlops-local\n"
        f"    scrape_interval: {interval}\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{settings.metrics_target}']\n"
        "  - job_name: mlops-serving\n"
        f"    scrape_interval: {interval}\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{settings.serve_target}']\n"
        "  - job_name: prometheus\n"
        "    static_configs:\n"
        f"      - targets: ['{own}']\n"
    )
    if settings.prometheus_remote_write_url:
        text += remote_write_block(settings.prometheus_remote_write_url)
    if alertmanager:
        target = settings.alertmanager_url.removeprefix("http://")
        text += (
            "\n"
            "alerting:\n"
            "  alertmanagers:\n"
            "    - static_configs:\n"
            f"        - targets: ['{target}']\n"
        )
    return text


def remote_write_block(url: str) -> str:
    """remote_write to ``url`` (long-term storage); its user:password becomes a basic_auth block."""
    parts = urllib.parse.urlsplit(url)
    target = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    block = "\nremote_write:\n" f"  - url: {json.dumps(target)}\n"
    if parts.username is not None:
        block += ("    basic_auth:\n"
                  f"      username: {json.dumps(urllib.parse.unquote(parts.username))}\n"
                  f"      password: {json.dumps(urllib.parse.unquote(parts.password or ''))}\n")
    return block


def config_path(settings: Settings, alertmanager: bool | None = None) -> Path:
    """Render prometheus.yml and its rules (thresholds from the settings) into MLOPS_HOME/prometheus.

    Always there, never the repository's file: rule_files is relative to the config's folder. With
    ``alertmanager`` None, alerts go to Alertmanager when its binary is installed.
    """
    if alertmanager is None:
        alertmanager = alertmanager_service.find_binary() is not None
    root = settings.prometheus_dir
    render.write_rules(settings, root / RULES_DIR)
    path = root / "prometheus.yml"
    tmp = path.with_suffix(".yml.tmp")
    tmp.write_text(render_config(settings, alertmanager))
    tmp.chmod(0o600)  # it may hold remote_write's password
    tmp.replace(path)
    return path


def find_promtool(settings: Settings) -> Path | None:
    """promtool next to the Prometheus binary in use (the release ships both), else on PATH."""
    try:
        prometheus = find_binary(settings)
    except UserError:
        prometheus = None
    if prometheus is not None:
        beside = prometheus.resolve().parent / "promtool"
        if beside.is_file() and os.access(beside, os.X_OK):
            return beside
    on_path = shutil.which("promtool")
    return Path(on_path) if on_path else None


def _platform_key() -> str | None:
    system = platform.system().lower()
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    key = f"{system}-{machine}"
    return key if key in PINNED_SHA256 else None


def cached_binary(settings: Settings) -> Path:
    return settings.tools_dir / f"prometheus-{PINNED_VERSION}" / "prometheus"


def find_binary(settings: Settings) -> Path | None:
    """PROMETHEUS_BIN, then PATH, then the copy cached under MLOPS_HOME/tools."""
    explicit = os.environ.get("PROMETHEUS_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UserError(f"PROMETHEUS_BIN={explicit} is not an executable file")
        return path
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path)
    cached = cached_binary(settings)
    return cached if cached.is_file() else None


def download_release(settings: Settings, url_template: str = RELEASE_URL) -> Path | None:
    """Download the pinned release, verify its sha256, cache the binary; None when offline."""
    key = _platform_key()
    if key is None:
        log.info("no pinned Prometheus release for %s/%s", platform.system(), platform.machine())
        return None
    url = url_template.format(version=PINNED_VERSION, platform=key)
    target = cached_binary(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading Prometheus %s from %s", PINNED_VERSION, url)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "prometheus.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, archive.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            log.info("download failed (%s); trying the next source", exc)
            return None
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != PINNED_SHA256[key]:
            raise UserError(
                f"Prometheus download from {url} has sha256 {digest}, expected {PINNED_SHA256[key]}; "
                "refusing to use it"
            )
        folder = f"prometheus-{PINNED_VERSION}.{key}"
        with tarfile.open(archive) as tar:
            for name in ("promtool", "prometheus"):  # promtool checks and unit-tests the alert rules
                tar.extract(f"{folder}/{name}", tmp, filter="data")
                extracted = Path(tmp) / folder / name
                extracted.chmod(0o755)
                extracted.replace(target.with_name(name))
    return target


def install_with_apt() -> Path | None:
    """Debian's `prometheus` package, when root on Debian/Ubuntu; None otherwise."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    log.info("installing Debian's prometheus package with apt-get")
    env = child_env({"DEBIAN_FRONTEND": "noninteractive"})
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            return None
    found = shutil.which("prometheus")
    return Path(found) if found else None


def ensure_binary(settings: Settings, allow_download: bool = True, allow_apt: bool = True) -> Path:
    """Find Prometheus, or fetch it: pinned release (sha256-checked), then Debian's package."""
    found = find_binary(settings)
    if found:
        return found
    found = download_release(settings) if allow_download else None
    if found is None and allow_apt:
        found = install_with_apt()
    if found is None:
        raise UserError(
            "no Prometheus binary found: set PROMETHEUS_BIN, put `prometheus` on PATH, or run "
            "bin/start (which downloads the pinned release or installs Debian's package)"
        )
    return found


# Names a browser on this machine may use for a service bound to a loopback (or wildcard) address.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
LOOKBACK_INTERVALS = 3  # scrapes missed before an instant query stops returning the last value


def cors_origin_regex(settings: Settings) -> str:
    """The origins whose pages may read Prometheus' API from a browser: the UI's and Grafana's.

    Prometheus anchors the regex itself; any other page (another app on localhost, a web site)
    gets no Access-Control-Allow-Origin header, so the browser keeps the answer from it.
    """
    hosts = {urllib.parse.urlsplit(url).netloc.rpartition(":")[0]
             for url in (settings.ui_url, settings.grafana_url)}
    if hosts & set(LOOPBACK_NAMES):
        hosts |= set(LOOPBACK_NAMES)
    ports = sorted({settings.ui_port, settings.grafana_port})
    host_re = "|".join(re.escape(host) for host in sorted(hosts))
    return f"http://(?:{host_re}):(?:{'|'.join(map(str, ports))})"


def lookback_delta(settings: Settings) -> str:
    """How far back an instant query looks for a sample: a few scrape intervals (Prometheus' default, 5
    minutes, would repeat the last value through an outage of Prometheus itself, e.g. a sleeping laptop)."""
    return duration(LOOKBACK_INTERVALS * settings.scrape_interval)


def command(settings: Settings, binary: Path) -> list[str]:
    """Prometheus bound to MLOPS_HOST, TSDB under MLOPS_HOME/prometheus, API for the stack's own pages."""
    return [
        str(binary),
        f"--config.file={config_path(settings)}",
        f"--storage.tsdb.path={settings.prometheus_dir / 'data'}",
        f"--web.listen-address={settings.host}:{settings.prometheus_port}",
        f"--web.cors.origin={cors_origin_regex(settings)}",
        f"--query.lookback-delta={lookback_delta(settings)}",
        # `mlops-local backup` takes a TSDB snapshot through the admin API when asked to, on loopback
        # only. Off by default: a page in the user's browser can send it a simple POST (delete series).
        *(["--web.enable-admin-api"] if settings.prometheus_admin_api
          and settings.host in ("127.0.0.1", "localhost", "::1") else []),
    ]


def serve(settings: Settings) -> int:
    """Check the port and the binary, then become Prometheus (exec): it runs until SIGTERM/SIGINT."""
    ensure_port_free(settings.host, settings.prometheus_port, "MLOPS_PROMETHEUS_PORT")
    binary = ensure_binary(settings, allow_download=False, allow_apt=False)
    (settings.prometheus_dir / "data").mkdir(parents=True, exist_ok=True)
    exec_service(command(settings, binary), "prometheus", child_env(), cwd=str(settings.prometheus_dir))

"""`serve grafana`: run Grafana with a generated config when installed; otherwise wait idle."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from mlops_local.errors import UserError
from mlops_local.grafana import DASHBOARD_FILE, DASHBOARDS_DIR, DATASOURCE_UID
from mlops_local.services.process import child_env, ensure_port_free, exec_service
from mlops_local.settings import Settings, setting

log = logging.getLogger(__name__)

HOME_DASHBOARD = DASHBOARD_FILE

INSTALL_HINT = """Grafana is not installed, so the optional dashboard at :{port} is off (the rest of the
stack runs normally). To enable it, install Grafana and restart `bin/start`:
  Debian/Ubuntu: add Grafana's apt repository (https://apt.grafana.com, steps in the README), then
                 `sudo apt-get install grafana` (found in /usr/sbin; do not start its own service)
  macOS:         brew install grafana   (do not `brew services start grafana`)
  Any system:    unpack a Grafana tarball and set GRAFANA_HOME to its folder
Waiting idle so that honcho keeps the other services running."""


@dataclass(frozen=True)
class GrafanaInstall:
    """A Grafana server binary and its home path (the folder holding conf/ and public/)."""

    binary: Path
    homepath: Path

    def command(self, config: Path) -> list[str]:
        if self.binary.name == "grafana":
            return [str(self.binary), "server", "--homepath", str(self.homepath), "--config", str(config)]
        return [str(self.binary), "--homepath", str(self.homepath), "--config", str(config)]


def _homepath_for(binary: Path) -> Path | None:
    real = binary.resolve()
    candidates = [real.parent.parent, real.parent.parent / "share" / "grafana",
                  Path("/usr/share/grafana"), Path("/opt/homebrew/opt/grafana/share/grafana"),
                  Path("/usr/local/opt/grafana/share/grafana")]
    for cand in candidates:
        if (cand / "conf" / "defaults.ini").is_file():
            return cand
    return None


# Where the official packages put the server when it is not on PATH (Debian's PATH for normal users
# has no /usr/sbin): deb/rpm packages, then Homebrew on Apple Silicon and on Intel.
KNOWN_BINARIES: tuple[Path, ...] = (
    Path("/usr/sbin/grafana"), Path("/usr/sbin/grafana-server"),
    Path("/usr/share/grafana/bin/grafana"), Path("/usr/share/grafana/bin/grafana-server"),
    Path("/opt/homebrew/bin/grafana"), Path("/usr/local/bin/grafana"),
)


def find_grafana(environ: dict[str, str] | None = None,
                 known: tuple[Path, ...] = KNOWN_BINARIES) -> GrafanaInstall | None:
    """GRAFANA_HOME's bin/grafana(-server), else `grafana`/`grafana-server` on PATH, else a known place."""
    environ = os.environ if environ is None else environ
    home = environ.get("GRAFANA_HOME")
    candidates: list[tuple[Path, Path | None]] = []
    if home:
        candidates += [(Path(home) / "bin" / name, Path(home)) for name in ("grafana", "grafana-server")]
    for name in ("grafana", "grafana-server"):
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            candidates.append((Path(found), None))
    candidates += [(binary, None) for binary in known]
    for binary, homepath in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            homepath = homepath or _homepath_for(binary)
            if homepath is not None:
                return GrafanaInstall(binary, homepath)
    return None


# What grafana.ini cannot hold inside a """-quoted value: a line break (or any control character) ends
# it and starts new settings, """ or a quote at either end closes it early, and ${VAR} or $__file{...}
# are expanded by Grafana wherever they appear.
_INI_UNSAFE = re.compile(r'[\x00-\x1f\x7f]|"""|^"|"$|\$(?:__[A-Za-z]+)?\{')


def check_ini_value(value: str, source: str) -> str:
    """``value`` if grafana.ini can hold it verbatim; else a UserError naming ``source``, not the value."""
    if _INI_UNSAFE.search(value):
        raise UserError(
            f"{source} cannot be used in grafana.ini: it must not contain line breaks or other control "
            'characters, three double quotes ("""), a double quote at either end, or ${ or $__name{ '
            "(Grafana would read them as more settings or expand them); choose another password"
        )
    return value


def admin_password(settings: Settings) -> str:
    """MLOPS_GRAFANA_ADMIN_PASSWORD, or a secret generated once and kept 0600 in MLOPS_HOME."""
    if settings.grafana_admin_password:
        return check_ini_value(settings.grafana_admin_password, setting("grafana_admin_password").env)
    path = settings.grafana_dir / "admin-password"
    if path.is_file():
        return check_ini_value(path.read_text().strip(), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` via a temporary file created with ``mode`` (never readable by others first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover would keep its own mode: O_CREAT only sets a new file's
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    tmp.replace(path)


def render_provisioning(settings: Settings) -> Path:
    """Datasource (fixed uid) and dashboard provider under MLOPS_HOME/grafana/provisioning."""
    root = settings.grafana_dir / "provisioning"
    _write(root / "datasources" / "mlops-local.yaml", (
        "apiVersion: 1\n"
        "datasources:\n"
        "  - name: Prometheus (mlops-local)\n"
        "    type: prometheus\n"
        f"    uid: {DATASOURCE_UID}\n"
        "    access: proxy\n"
        f"    url: {json.dumps(settings.prometheus_url)}\n"
        "    isDefault: true\n"
        "    editable: false\n"
        "    jsonData:\n"
        f"      timeInterval: {settings.scrape_interval:g}s\n"
    ))
    _write(root / "dashboards" / "mlops-local.yaml", (
        "apiVersion: 1\n"
        "providers:\n"
        "  - name: mlops-local\n"
        "    folder: mlops-local\n"
        "    type: file\n"
        "    disableDeletion: true\n"
        "    allowUiUpdates: false\n"
        "    options:\n"
        f"      path: {json.dumps(str(DASHBOARDS_DIR))}\n"  # JSON strings are YAML: spaces are safe
    ))
    for sub in ("plugins", "alerting"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def render_ini(settings: Settings) -> Path:
    """grafana.ini: bound to MLOPS_HOST, anonymous viewers, no default password, no phoning home."""
    gdir = settings.grafana_dir
    password = admin_password(settings)  # refused before anything is written
    provisioning = render_provisioning(settings)
    text = (
        "[server]\n"
        f"http_addr = {settings.host}\n"
        f"http_port = {settings.grafana_port}\n"
        "[paths]\n"
        f"data = {gdir / 'data'}\n"
        f"logs = {gdir / 'logs'}\n"
        f"plugins = {gdir / 'plugins'}\n"
        f"provisioning = {provisioning}\n"
        "[security]\n"
        "admin_user = admin\n"
        f"admin_password = \"\"\"{password}\"\"\"\n"
        "disable_gravatar = true\n"
        "cookie_samesite = strict\n"
        "[users]\n"
        "allow_sign_up = false\n"
        "[auth.anonymous]\n"
        "enabled = true\n"
        "org_role = Viewer\n"
        "[analytics]\n"
        "reporting_enabled = false\n"
        "check_for_updates = false\n"
        "check_for_plugin_updates = false\n"
        "feedback_links_enabled = false\n"
        "[news]\n"
        "news_feed_enabled = false\n"
        "[plugins]\n"
        "preinstall_disabled = true\n"
        "[snapshots]\n"
        "external_enabled = false\n"
        "[dashboards]\n"
        f"default_home_dashboard_path = {HOME_DASHBOARD}\n"
        "[log]\n"
        "mode = console\n"
    )
    path = gdir / "grafana.ini"
    _write(path, text, mode=0o600)  # holds the admin password
    return path


# What a missing optional service's placeholder runs once it has said so: a bare interpreter (4 MB PSS, not
# the 10 MB of this one with its imports) that waits for the stop and exits 0.
IDLE_PROGRAM = "import signal, sys; signal.sigwait({signal.SIGTERM, signal.SIGINT}); sys.exit(0)"


def wait_idle(message: str = "") -> NoReturn:
    """Print ``message``, then wait for SIGTERM/SIGINT and exit 0 (a missing optional Grafana must not stop
    honcho), as a bare interpreter in place of this process.

    The two signals are blocked before the message appears and stay blocked through the exec (the mask
    is inherited) until sigwait takes them: a stop sent as soon as the message is read is a clean exit 0,
    not a kill.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if message:
        print(message, flush=True)
    for handler in logging.getLogger().handlers:  # exec drops whatever is still buffered
        handler.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", IDLE_PROGRAM])


def serve(settings: Settings, install: GrafanaInstall | None = None) -> int:
    """Become Grafana (exec) when found; otherwise say once how to install it and stay up idle."""
    install = install or find_grafana()
    if install is None:
        return wait_idle(INSTALL_HINT.format(port=settings.grafana_port))
    ensure_port_free(settings.host, settings.grafana_port, "MLOPS_GRAFANA_PORT")
    config = render_ini(settings)
    exec_service(install.command(config), "grafana", child_env(), cwd=str(install.homepath))

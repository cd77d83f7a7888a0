"""Grafana provisioning: the generated grafana.ini and provisioning files, the idle behaviour when
Grafana is missing, and (where a Grafana binary exists) the real server provisioned end to end."""

from __future__ import annotations

import base64
import configparser
import io
import json
import os
import signal
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlops_local.errors import UserError
from mlops_local.grafana import DASHBOARD_FILE, DASHBOARD_UID, DATASOURCE_UID
from mlops_local.services import grafana
from mlops_local.settings import Settings
from tests.services import MLOPS, stack_env, start_service, wait_for


def _ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(path.read_text())
    return parser


def test_ini_binds_host_allows_anonymous_viewers_and_phones_nowhere(stack_settings: Settings) -> None:
    settings = stack_settings.replace(host="127.0.0.2")
    path = grafana.render_ini(settings)
    ini = _ini(path)
    assert ini["server"]["http_addr"] == "127.0.0.2"
    assert ini["server"]["http_port"] == str(settings.grafana_port)
    assert ini["auth.anonymous"]["enabled"] == "true" and ini["auth.anonymous"]["org_role"] == "Viewer"
    assert ini["users"]["allow_sign_up"] == "false"
    for key in ("reporting_enabled", "check_for_updates", "check_for_plugin_updates"):
        assert ini["analytics"][key] == "false"
    assert ini["news"]["news_feed_enabled"] == "false" and ini["plugins"]["preinstall_disabled"] == "true"
    assert ini["snapshots"]["external_enabled"] == "false"
    assert Path(ini["dashboards"]["default_home_dashboard_path"]) == DASHBOARD_FILE
    for key in ("data", "logs", "plugins", "provisioning"):
        assert Path(ini["paths"][key]).is_relative_to(settings.grafana_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the admin password


def test_admin_password_is_generated_once_kept_0600_and_never_a_default(stack_settings: Settings) -> None:
    ini = _ini(grafana.render_ini(stack_settings))
    password = ini["security"]["admin_password"].strip('"')
    secret = stack_settings.grafana_dir / "admin-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text().strip() == password
    assert password not in ("", "admin") and len(password) >= 24
    again = _ini(grafana.render_ini(stack_settings))["security"]["admin_password"].strip('"')
    assert again == password  # stable across restarts
    other_home = stack_settings.replace(home=stack_settings.home.parent / "other")
    assert grafana.admin_password(other_home) != password  # random per installation


def test_admin_password_from_the_environment_is_used_and_not_written(stack_settings: Settings) -> None:
    settings = stack_settings.replace(grafana_admin_password="from-env-Secret-1")
    ini = _ini(grafana.render_ini(settings))
    assert ini["security"]["admin_password"].strip('"') == "from-env-Secret-1"
    assert not (settings.grafana_dir / "admin-password").exists()


INJECTION = '"""\n[server]\nhttp_addr = 0.0.0.0\n[security]\nadmin_password = """x'


@pytest.mark.parametrize("password", [INJECTION, "line\nbreak", "carriage\rreturn", "nul\x00byte",
                                      'has """ inside', '"leading', 'trailing"', "${HOME}",
                                      "$__file{/etc/passwd}", "a$__env{PATH}b"])
def test_a_password_the_ini_cannot_hold_is_refused_naming_the_setting(stack_settings: Settings,
                                                                      password: str) -> None:
    settings = stack_settings.replace(grafana_admin_password=password)
    with pytest.raises(UserError, match=r"^MLOPS_GRAFANA_ADMIN_PASSWORD cannot be used in grafana\.ini: "
                                        r"it must not contain line breaks") as refused:
        grafana.render_ini(settings)
    message = str(refused.value)
    assert "\n" not in message and password not in message  # one line, the secret not echoed
    assert not settings.grafana_dir.exists()  # refused before anything was written


def test_a_password_with_other_punctuation_is_kept_verbatim(stack_settings: Settings) -> None:
    password = "p a\"ss;#=[x]$1{}'`\\é"
    ini = _ini(grafana.render_ini(stack_settings.replace(grafana_admin_password=password)))
    assert ini["security"]["admin_password"] == f'"""{password}"""'
    assert ini["server"]["http_addr"] == stack_settings.host


def test_serve_grafana_refuses_an_unsafe_password_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "grafana-install"
    _fake_install(home, "bin/grafana")
    _fake_install(home, "conf/defaults.ini")
    env = stack_env(tmp_path / "home", GRAFANA_HOME=str(home), MLOPS_GRAFANA_ADMIN_PASSWORD=INJECTION)
    out = subprocess.run([*MLOPS, "serve", "grafana"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "MLOPS_GRAFANA_ADMIN_PASSWORD cannot be used in grafana.ini" in out.stderr
    assert "0.0.0.0" not in out.stderr + out.stdout and not (tmp_path / "home" / "grafana").exists()


def test_generated_files_are_never_readable_by_others_while_written(stack_settings: Settings,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The mode of each file at the moment it is opened for writing (before any byte of the password)."""
    seen: dict[str, int] = {}
    real_open = io.open

    def spying_open(file, mode="r", *args, **kwargs):  # io.open's signature
        handle = real_open(file, mode, *args, **kwargs)
        if any(flag in mode for flag in "wax+"):
            path = Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))
            seen[path.name] = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        return handle

    monkeypatch.setattr(io, "open", spying_open)
    previous = os.umask(0)  # what a careless umask would give a new file: rw for everyone
    try:
        path = grafana.render_ini(stack_settings.replace(grafana_admin_password="from-env-Secret-1"))
    finally:
        os.umask(previous)
    assert seen.get("grafana.ini.tmp") == 0o600, seen
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert seen.get("mlops-local.yaml.tmp") == 0o644  # provisioning files: no secret, exactly 0644


def test_provisioning_datasource_and_dashboard_provider(stack_settings: Settings) -> None:
    root = grafana.render_provisioning(stack_settings)
    (source,) = yaml.safe_load((root / "datasources" / "mlops-local.yaml").read_text())["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"] == stack_settings.prometheus_url and source["isDefault"] is True
    assert source["jsonData"]["timeInterval"] == "1s"  # the scrape interval of this stack
    (provider,) = yaml.safe_load((root / "dashboards" / "mlops-local.yaml").read_text())["providers"]
    folder = Path(provider["options"]["path"])
    assert provider["type"] == "file" and (folder / DASHBOARD_FILE.name).is_file()
    uids = {json.loads(p.read_text())["uid"] for p in folder.glob("*.json")}
    assert uids == {DASHBOARD_UID}


def _fake_install(root: Path, binary: str) -> Path:
    """A file tree shaped like a Grafana install (an executable and conf/defaults.ini): paths only."""
    path = root / binary
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_grafana_uses_grafana_home_then_path_then_known_places(tmp_path: Path) -> None:
    empty = str(tmp_path / "empty")
    home = tmp_path / "grafana-12"
    binary = _fake_install(home, "bin/grafana")
    (home / "conf").mkdir()
    (home / "conf" / "defaults.ini").write_text("")
    install = grafana.find_grafana({"GRAFANA_HOME": str(home), "PATH": empty}, known=())
    assert install is not None and install.binary == binary and install.homepath == home
    cmd = install.command(Path("/x/grafana.ini"))
    assert cmd[:2] == [str(binary), "server"] and "--homepath" in cmd and "/x/grafana.ini" in cmd
    assert grafana.find_grafana({"PATH": empty}, known=()) is None
    # Debian's package: /usr/sbin/grafana-server (not on a normal user's PATH), home /usr/share/grafana.
    sbin = _fake_install(tmp_path / "usr", "sbin/grafana-server")
    _fake_install(tmp_path / "usr", "share/grafana/conf/defaults.ini")
    found = grafana.find_grafana({"PATH": empty}, known=(tmp_path / "nowhere", sbin))
    assert found is not None and found.homepath == tmp_path / "usr" / "share" / "grafana"
    assert found.command(Path("g.ini"))[1] == "--homepath"  # grafana-server takes no `server` verb
    on_path = grafana.find_grafana({"PATH": str(sbin.parent), "GRAFANA_HOME": str(tmp_path / "bad")},
                                   known=())
    assert on_path is not None and on_path.binary == sbin  # a wrong GRAFANA_HOME does not stick


def test_serve_grafana_without_grafana_prints_the_hint_once_and_idles_until_sigterm(tmp_path: Path) -> None:
    empty = tmp_path / "no-grafana-here"
    empty.mkdir()
    env = stack_env(tmp_path / "home", PATH=str(empty))
    env.pop("GRAFANA_HOME", None)
    if grafana.find_grafana(env) is not None:
        pytest.skip("Grafana is installed in a standard place here, so it cannot be missing")
    proc = subprocess.Popen([*MLOPS, "serve", "grafana"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()  # blocks until the hint starts (or the process dies)
        assert "Grafana is not installed" in first
        assert proc.poll() is None, "serve grafana must stay up when Grafana is missing"
        # It waits as a bare interpreter (exec), not as the wrapper with its imports (issue 13, section 5).
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        wait_for(lambda: b"mlops_local" not in cmdline.read_bytes(), "the exec of the idle placeholder", 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()  # not communicate(): it would skip what readline() buffered
        proc.wait(timeout=30)
    out = first + rest
    assert proc.returncode == 0
    assert out.count("Grafana is not installed") == 1
    assert "brew install grafana" in out and "GRAFANA_HOME" in out
    assert "Traceback" not in out


def _get(url: str, password: str | None = None) -> object:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.grafana
@pytest.mark.integration
def test_real_grafana_is_provisioned_with_datasource_and_dashboard(tmp_path: Path) -> None:
    if grafana.find_grafana() is None:
        pytest.skip("no Grafana binary (set GRAFANA_HOME or put grafana on PATH) - install it to run this")
    env = stack_env(tmp_path / "home")
    prom = start_service("prometheus", env, tmp_path / "logs")
    try:
        service = start_service("grafana", env, tmp_path / "logs", timeout=120)
        try:
            password = (tmp_path / "home" / "grafana" / "admin-password").read_text().strip()
            health = _get(service.url + "/api/health")
            assert health["database"] == "ok"
            source = _get(f"{service.url}/api/datasources/uid/{DATASOURCE_UID}/health", password)
            assert source["status"] == "OK", source
            found = _get(f"{service.url}/api/search?query=mlops-local")  # anonymous viewer
            assert any(d.get("uid") == DASHBOARD_UID for d in found), found
            dash = _get(f"{service.url}/api/dashboards/uid/{DASHBOARD_UID}")
            assert dash["dashboard"]["refresh"] == "5s"
        finally:
            assert not service.stop()
    finally:
        prom.stop()

"""A tracking URI with user:password: the password is never shown (config, logs, run links, errors) and
the health check sends it, so `train` logs to the server instead of falling back to the local store."""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlops_local.logsetup import configure_logging
from mlops_local.uris import mask_credentials, split_credentials
from tests.services import MLOPS, ROOT, free_port, stack_env

PASSWORD = "s3cr@t-Pw"  # a raw "@" too: masked whole, sent whole
USER = "alice"


def with_credentials(uri: str) -> str:
    """``uri`` with alice's credentials in it (the password percent-encoded, as a URI needs)."""
    parts = urllib.parse.urlsplit(uri)
    netloc = f"{USER}:{urllib.parse.quote(PASSWORD, safe='')}@{parts.netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def secret_shown(text: str) -> bool:
    return PASSWORD in text or urllib.parse.quote(PASSWORD, safe="") in text or "s3cr" in text


@pytest.mark.parametrize("text, masked", [
    ("http://alice:pw@127.0.0.1:8080", "http://alice:***@127.0.0.1:8080"),
    ("http://alice:p@w@host:1/x?y=z", "http://alice:***@host:1/x?y=z"),
    ("failed: https://u:p@a/api and postgresql://v:q@db/m", "failed: https://u:***@a/api and postgresql://v:***@db/m"),
    ("http://127.0.0.1:8080/#/experiments/1", "http://127.0.0.1:8080/#/experiments/1"),
    ("http://token@host/", "http://token@host/"),
])
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_split_credentials_gives_the_plain_url_and_a_basic_auth_header() -> None:
    url, header = split_credentials(with_credentials("http://127.0.0.1:5000") + "/health")
    assert url == "http://127.0.0.1:5000/health"
    assert header == "Basic YWxpY2U6czNjckB0LVB3"  # base64("alice:s3cr@t-Pw")
    assert split_credentials("http://127.0.0.1:5000/health") == ("http://127.0.0.1:5000/health", None)


@pytest.mark.parametrize("verbose", [False, True])
def test_log_lines_never_carry_the_password(verbose: bool, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", verbose=verbose)  # one line per record, or tracebacks with --verbose
    log = logging.getLogger("mlops_local.test")
    uri = with_credentials("http://127.0.0.1:5000")
    log.info("syncing from %s", uri)
    try:
        raise RuntimeError(f"API request to {uri}/api failed")
    except RuntimeError:
        log.exception("sync failed: %s", uri)
    err = capsys.readouterr().err
    assert "syncing from http://alice:***@127.0.0.1:5000" in err
    assert "sync failed: http://alice:***@127.0.0.1:5000" in err
    assert ("Traceback" in err and "API request to http://alice:***@" in err) == verbose
    assert not secret_shown(err)


def _env(mlflow_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The session server's env, the URI with credentials, and a home of its own (so a fallback to the
    local store would land there, not in the server's database)."""
    env = dict(mlflow_env, MLOPS_HOME=str(tmp_path / "home"))
    env["MLFLOW_TRACKING_URI"] = with_credentials(mlflow_env["MLFLOW_TRACKING_URI"])
    return env


def test_config_masks_the_password(mlflow_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(mlflow_env, tmp_path)
    for extra in ([], ["--json"]):
        out = subprocess.run([*MLOPS, "config", *extra], env=env, capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert f"http://{USER}:***@127.0.0.1:{env['MLOPS_MLFLOW_PORT']}" in out.stdout
        assert not secret_shown(out.stdout + out.stderr)


@pytest.mark.integration
def test_train_with_credentials_logs_to_the_server_and_never_shows_the_password(
        mlflow_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(mlflow_env, tmp_path)
    out = subprocess.run([*MLOPS, "--log-level", "DEBUG", "train", "--dataset", "diabetes",
                          "--model", "ridge", "--experiment", "with-credentials", "--json"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not secret_shown(out.stdout + out.stderr)
    result = json.loads(out.stdout)
    assert result["local_store_fallback"] is False, "the server is up: the run must not go to the local store"
    assert result["tracking_uri"] == f"http://{USER}:***@127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    # a link has no user:password (the browser asks for them); a masked one would only fail to log in
    assert result["run_url"].startswith(f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}/#/experiments/")
    run = MlflowClient(tracking_uri=mlflow_env["MLFLOW_TRACKING_URI"]).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["r2"] == pytest.approx(result["metrics"]["r2"])
    assert not (tmp_path / "home" / "mlflow" / "mlflow.db").exists()


def test_an_unreachable_server_with_credentials_is_named_without_the_password(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", MLFLOW_TRACKING_URI=with_credentials(f"http://127.0.0.1:{free_port()}"))
    out = subprocess.run([*MLOPS, "train", "--dataset", "diabetes", "--model", "ridge"], env=env,
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 1
    assert "is not reachable" in out.stderr and f"{USER}:***@" in out.stderr
    assert not secret_shown(out.stdout + out.stderr)

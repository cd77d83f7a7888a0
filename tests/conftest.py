"""Shared fixtures: a temporary MLOPS_HOME, free ports, and real services started on them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_local.settings import Settings
from tests.services import Service, stack_env, start_service

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SHARED_CO2 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "co2_emissions_canada.csv"
PACKAGED_CO2 = Path(__file__).resolve().parents[1] / "mlops_local" / "data" / "co2_emissions_canada.csv"


@pytest.fixture(scope="session")
def co2_csv() -> Path:
    """The real CO2 dataset: ../shared when present (as in the brief), else the packaged copy."""
    return SHARED_CO2 if SHARED_CO2.is_file() else PACKAGED_CO2


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    """Settings for a private stack: temporary home, free ports (nothing started)."""
    return Settings.from_env(stack_env(tmp_path / "home"))


@pytest.fixture(scope="session")
def mlflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One real MLflow server for the session (it is the slow one); its env points clients at it."""
    home = tmp_path_factory.mktemp("mlflow-home")
    env = stack_env(home)
    service = start_service("mlflow", env, home / "logs")
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    yield env
    service.stop()


@pytest.fixture(scope="session")
def mlflow_settings(mlflow_env: dict[str, str]) -> Settings:
    """Settings whose tracking URI is the session's real MLflow server."""
    return Settings.from_env(mlflow_env)


@pytest.fixture
def mlflow_service(tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    """A private MLflow server for a test that needs to stop or restart it."""
    env = stack_env(tmp_path / "home")
    service = start_service("mlflow", env, tmp_path / "logs")
    yield service, env
    service.stop()


@pytest.fixture(scope="session")
def honcho_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The whole stack from the Procfile under honcho, on free ports in a temporary MLOPS_HOME.

    Yields the stack's environment (ports, MLOPS_HOME, MLFLOW_TRACKING_URI) once every required
    service is healthy. Teardown fails if any process outlives honcho's stop.
    """
    from tests.services import start_honcho, wait_stack_healthy

    home = tmp_path_factory.mktemp("stack-home")
    stack = start_honcho(stack_env(home), home / "logs")
    wait_stack_healthy(stack)
    env = dict(stack.env)
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLOPS_MLFLOW_PORT']}"
    yield env
    leftovers = stack.stop()
    assert not leftovers, f"processes left after stopping honcho: {leftovers}"

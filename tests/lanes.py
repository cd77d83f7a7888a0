"""Test lanes: a test that uses a real service (or the browser) through a fixture is marked for it.

``bin/test --fast`` runs ``-m "not integration and not browser"``: the unit tests alone. Marking by the
fixtures a test asks for keeps the fast lane honest without a marker line in every module; a module that
starts a service by hand still marks itself (``pytestmark = pytest.mark.integration``).
"""

from __future__ import annotations

import pytest

# Fixtures that start (or depend on) a real MLflow, Prometheus, Streamlit or honcho stack.
SERVICE_FIXTURES = frozenset({
    "mlflow_env", "mlflow_settings", "mlflow_service", "honcho_stack", "prometheus_stack", "ui_env",
    "ui_trained_run", "app_stack_env", "postgres_cluster",
})
BROWSER_FIXTURES = frozenset({"chromium", "browser_page"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test ``integration``/``browser`` from the fixtures it uses (directly or not)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)
        elif used & SERVICE_FIXTURES:
            item.add_marker(pytest.mark.integration)

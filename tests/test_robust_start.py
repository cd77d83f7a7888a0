"""Services come up in any order: the UI shows "starting" for one that is not up yet, never crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest import APP
from tests.services import start_service


def _sidebar_text(at: AppTest) -> str:
    return "\n".join(md.value for md in at.sidebar.markdown)


def _service_line(text: str, name: str) -> str:
    """The sidebar's line for ``name``: ``name :badge[...]``, or ``[name](url) ...`` once it answers."""
    return next(line for line in text.splitlines() if line.startswith((f"{name} ", f"[{name}]")))


@pytest.mark.integration
def test_ui_shows_starting_then_up_as_mlflow_comes_up_late(
    app_stack_env: dict[str, str], tmp_path: Path
) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    mlflow_line = _service_line(_sidebar_text(at), "mlflow")
    assert "[starting]" in mlflow_line and "](" not in mlflow_line  # no link to a service that is down
    service = start_service("mlflow", app_stack_env, tmp_path / "logs")
    try:
        from mlops_local.ui.common import service_statuses

        service_statuses.clear()  # statuses are cached for a few seconds
        # A new session, as a browser reload is (AppTest drops sidebar elements on reruns of
        # st.navigation apps, which a real browser does not).
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        assert not at.exception, at.exception
        text = _sidebar_text(at)
        mlflow_line = _service_line(text, "mlflow")
        assert "[up]" in mlflow_line and mlflow_line.startswith("[mlflow](http://"), text
    finally:
        service.stop()

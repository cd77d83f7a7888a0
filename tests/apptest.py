"""Streamlit's AppTest on the real app script: one way for every UI test to open a page."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

import mlops_local.ui

APP = Path(mlops_local.ui.__file__).parent / "app.py"


def open_app(page: str | None = None, timeout: float = 60) -> AppTest:
    """A new session of the app (a new browser tab), on ``page`` (e.g. "runs") when given, without an
    exception."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at

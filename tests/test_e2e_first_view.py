"""The very first session of a fresh UI process (what a person sees right after `bin/start`): our
navigation and service list, not Streamlit's file-based page list. A `pages/` folder next to the entry
script made Streamlit run that first session through its file-based navigation (app, monitoring, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import screenshot, wait_idle
from tests.services import stack_env, start_service

pytestmark = [pytest.mark.browser, pytest.mark.integration]
TITLES = ["Train", "Sweep", "Runs", "Predict", "Monitoring", "Serving"]


@pytest.mark.parametrize(("path", "title"), [("", "Train"), ("/monitoring", "Monitoring")])
def test_first_session_of_a_fresh_ui_shows_our_navigation(tmp_path: Path, browser_page, path: str,
                                                          title: str) -> None:
    """Opened at the root or at a page's own address (a bookmark, a link from elsewhere)."""
    # a UI process of its own: health checks open no session, so the browser's is the first
    ui = start_service("ui", stack_env(tmp_path / "home"), tmp_path / "logs")
    try:
        page = browser_page
        page.goto(ui.url + path)
        page.get_by_role("heading", name=title, exact=True).wait_for()
        wait_idle(page)
        nav = page.locator('[data-testid="stSidebarNav"] a')
        names = [text.split("\n")[-1].strip() for text in nav.all_inner_texts()]  # after the icon
        screenshot(page, f"first-view{path.replace('/', '-')}")
        assert names == TITLES, names
        assert page.get_by_text("Services", exact=True).count() >= 1  # our sidebar, drawn by app.py
    finally:
        ui.stop()

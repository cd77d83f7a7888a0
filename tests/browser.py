"""Playwright on Debian's Chromium for the browser tests: fixtures and Streamlit helpers.

The fixtures (``chromium``, ``browser_page``) are registered once for the session by
``pytest_plugins`` in tests/conftest.py: import only the helpers into test modules.
Widgets are found by the ``st-key-<key>`` class Streamlit puts on every keyed element.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000


def chromium_path() -> str | None:
    """MLOPS_CHROMIUM, else /usr/bin/chromium, else chromium on PATH."""
    for candidate in (os.environ.get("MLOPS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One headless Chromium for the session (skipped with a reason when none is installed)."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install it (apt-get install chromium) or set MLOPS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context and page (downloads allowed); a screenshot when the test failed."""
    context = chromium.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        try:
            screenshot(page, f"failure-{request.node.name}")
        except Exception:  # noqa: BLE001 - the page may be gone; the test failure is what matters
            pass
    context.close()


def key(name: str) -> str:
    """CSS selector of the element container Streamlit gives a widget with ``key=name``."""
    return ".st-key-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def wait_idle(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until Streamlit is connected and no script run is in progress.

    Reads the state Streamlit's app root carries for its own end-to-end tests
    (``data-test-connection-state``, ``data-test-script-state``): the status widget's "Running" text
    appears only after a delay, so a run that just started could pass for an idle page (a click sent
    then can race the run's redraw)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        """() => { const app = document.querySelector('[data-testid="stApp"]');
                   return app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
                       && ['notRunning', 'compilationError'].includes(
                              app.getAttribute('data-test-script-state')); }""", timeout=timeout_ms)


def open_page(page, title: str) -> None:
    """Click a page in the sidebar navigation (same session) and wait for its title."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    page.get_by_role("heading", name=title, exact=True).wait_for()
    wait_idle(page)


def selected(page, name: str) -> str:
    """The value a selectbox with ``key=name`` shows (a combobox input in this Streamlit)."""
    return page.locator(key(name)).locator('input[role="combobox"]').input_value()


def choose(page, name: str, option: str) -> None:
    """Pick ``option`` in the selectbox with ``key=name``."""
    box = page.locator(key(name)).locator('input[role="combobox"]')
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def metric_value(page, label: str) -> str:
    """The displayed value of the st.metric whose label is ``label``."""
    metric = page.locator('[data-testid="stMetric"]', has=page.locator(
        '[data-testid="stMetricLabel"]', has_text=label)).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def screenshot(page, name: str) -> Path:
    """Full-page screenshot into test-artifacts/ (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # Streamlit scrolls inside its main section, not the page: grow the viewport to the content.
    size = page.viewport_size
    height = page.evaluate("""() => Math.max(0, ...Array.from(document.querySelectorAll(
        '[data-testid="stMain"], [data-testid="stAppViewContainer"], section')).map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 6000))})
    page.wait_for_timeout(300)  # let the charts re-layout to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


DATAFRAME_ROW_PX = 35  # Streamlit's default dataframe row height (the header row has the same)


def wait_script_done(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until no script run is in progress (see ``wait_idle``)."""
    wait_idle(page, timeout_ms)


def _row_states(page, name: str) -> list[str | None]:
    """aria-selected of every data row of the dataframe with ``key=name`` (its accessibility table)."""
    return page.evaluate("""(sel) => Array.from(document.querySelectorAll(sel + ' tbody tr'))
                                        .map(r => r.getAttribute('aria-selected'))""", key(name))


def _settled_box(page, locator, timeout_s: float = 10.0) -> dict:
    """The element's bounding box once it stopped moving (a scroll into view or a layout change above
    it still under way would send a click computed from the box to another row, or the header)."""
    import time

    deadline = time.monotonic() + timeout_s
    box = locator.bounding_box()
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)
        again = locator.bounding_box()
        if again == box:
            return box
        box = again
    raise AssertionError(f"{locator} kept moving for {timeout_s} s")


def click_until(page, locator, started, attempts: int = 3, wait_ms: int = 20_000) -> None:
    """Click the button ``locator`` until ``started`` (a locator) shows, at most ``attempts`` times.

    The button is clicked once its box stopped moving (an expander opening above it animates). A click
    can still be lost under load (seen once in CI: the Send button of a just-opened expander, nothing
    started, the page idle): it is clicked again only when the page is idle, ``started`` is not there
    and the button is still enabled, so a click that did land is never repeated.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(attempts):
        wait_script_done(page)
        locator.wait_for()
        _settled_box(page, locator)
        locator.click()
        try:
            started.first.wait_for(timeout=wait_ms)
            return
        except PlaywrightTimeout:
            wait_script_done(page)
            if started.count() or not locator.is_enabled():
                return  # it landed; the page was slow to show it
    raise AssertionError(f"{locator} did not start anything after {attempts} clicks")


def tick_row(page, name: str, row: int, attempts: int = 3) -> None:
    """Click the selection checkbox of ``row`` (0 = first data row) of the dataframe with ``key=name``.

    The grid is drawn on a canvas: the checkbox is found by its position, and the click is checked on
    the grid's accessibility table (its row's aria-selected flips). A grid being redrawn after a rerun
    can drop a click: it is then clicked again, at most ``attempts`` times, unless the first click did
    land and the grid was only slow to show it. Any other row changing fails the call, naming the rows.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    wait_script_done(page)
    grid = page.locator(key(name)).locator('[data-testid="stDataFrame"]')
    grid.scroll_into_view_if_needed()  # clicking a button further down scrolls the grid out of view
    selected_js = """([sel, row]) => { const r = document.querySelectorAll(sel + ' tbody tr')[row];
                                        return r ? r.getAttribute('aria-selected') : null; }"""
    before = _row_states(page, name)
    was = page.evaluate(selected_js, [key(name), row])  # None while the grid has not drawn its rows
    for _ in range(attempts):
        box = _settled_box(page, grid)
        x, y = box["x"] + 16, box["y"] + DATAFRAME_ROW_PX * (row + 1.5)
        page.mouse.move(x, y, steps=3)  # as a hand does: the grid tracks the pointer to know the cell
        page.mouse.click(x, y)
        try:
            changed = f"(arg) => ({selected_js})(arg) !== {was!r}".replace("None", "null")
            page.wait_for_function(changed, arg=[key(name), row], timeout=10_000)
            break
        except PlaywrightTimeout:
            wait_script_done(page)
            if page.evaluate(selected_js, [key(name), row]) != was:
                break  # the click landed; the grid was slow to show it
    else:
        raise AssertionError(f"row {row} of {name} did not toggle after {attempts} clicks")
    wait_script_done(page)
    after = _row_states(page, name)
    others = [i for i, (was, now) in enumerate(zip(before, after, strict=False)) if was != now and i != row]
    assert not others, f"ticking row {row} of {name} also toggled row(s) {others}: {before} -> {after}"

"""Pages in a real headless browser: Debian's Chromium driven by Playwright.

Playwright's own browser downloads are never used (they cannot be fetched here, nor in CI):
``.ci/run`` installs the ``chromium`` package and the tests launch it by path. Without it
the tests fail, saying what to install; they never skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("FLASHSALE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # we run as root in CI
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LAPTOP = {"width": 1366, "height": 768}


@contextmanager
def headless_page(address: str) -> Iterator:
    """A laptop-sized page of headless Chromium showing ``address``; ``page.script_errors``
    collects its uncaught script errors and ``page.requested`` every URL it asked for."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=LAPTOP)
            errors: list[str] = []
            requested: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.goto(address)
            page.script_errors = errors
            page.requested = requested
            yield page
        finally:
            browser.close()

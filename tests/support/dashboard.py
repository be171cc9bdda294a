"""The dashboard in a real headless browser (``tests.support.browser``).

``FLASHSALE_DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py`` also
saves the page mid-sale as the screenshot docs/observability.md shows; a normal run writes no
tracked file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from service.cli.dev_servers import wait_until
from tests.support.browser import headless_page

SCREENSHOT_ENV = "FLASHSALE_DASHBOARD_SCREENSHOT"
SCREENSHOT_MAX_BYTES = 300 * 1024


@contextmanager
def dashboard_page(url: str) -> Iterator:
    """A page of headless Chromium, laptop-sized, showing ``url``/dashboard."""
    with headless_page(f"{url}/dashboard") as page:
        yield page


def text(page, name: str) -> str:
    return page.locator(f'[data-field="{name}"]').inner_text()


def number(page, name: str) -> int | None:
    """The integer a field shows ("1,234" → 1234), or None while it shows "—"."""
    digits = re.sub(r"[^\d-]", "", text(page, name))
    return int(digits) if digits else None


def milliseconds(page, name: str) -> float | None:
    """A latency field ("38.6", "104", "1,204") as a number, or None while it shows "—"."""
    digits = re.sub(r"[^\d.]", "", text(page, name))
    return float(digits) if digits else None


def recent_order_ids(page) -> list[str]:
    return page.locator("#recent tbody tr").evaluate_all("rows => rows.map(row => row.dataset.orderId)")


def fits_laptop(page) -> bool:
    """Nothing scrolls on a 1366x768 screen."""
    return page.evaluate(
        "() => document.documentElement.scrollWidth <= innerWidth"
        " && document.documentElement.scrollHeight <= innerHeight"
    )


def maybe_save_screenshot(page, when: Callable[[], bool] = lambda: True) -> Path | None:
    """Save the page as a PNG where ``FLASHSALE_DASHBOARD_SCREENSHOT`` says, if it does, as
    soon as ``when()`` holds."""
    target = os.environ.get(SCREENSHOT_ENV)
    if not target:
        return None
    wait_until(when, 15, "the page to be worth a screenshot", 0.1)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), type="png")
    assert path.stat().st_size < SCREENSHOT_MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
    return path

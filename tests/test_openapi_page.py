"""The OpenAPI page works with no network but the API's own: Swagger UI's files come from the
pinned ``swagger-ui-py`` package, served under /schema/assets/ (service/api/openapi_page.py)."""

from __future__ import annotations

from urllib.parse import urlparse

import httpx
import pytest

from service.api.openapi_page import ASSETS_PATH
from service.cli.dev_servers import wait_until
from tests.support.browser import headless_page

pytestmark = pytest.mark.slow


def test_the_page_renders_every_route_from_the_api_alone(system):
    system.start_apis(1)
    api = urlparse(system.url).netloc
    with headless_page(f"{system.url}/schema") as page:
        routes = page.locator(".opblock-summary-path")
        wait_until(lambda: routes.count() > 0, 20, "Swagger UI to render the operations")
        shown = {routes.nth(i).inner_text() for i in range(routes.count())}
        elsewhere = [url for url in page.requested if urlparse(url).netloc != api]
        errors = page.script_errors
    documented = set(httpx.get(f"{system.url}/schema/openapi.json", timeout=10).json()["paths"])
    assert shown == documented, "every documented route is on the page"
    assert {"/buy", "/orders/{order_id}"} <= shown
    assert elsewhere == [], "the page asked another host for something"
    assert errors == []
    assets = [url for url in page.requested if urlparse(url).path.startswith(ASSETS_PATH)]
    assert len(assets) >= 3, "script, preset and style came from our assets"


def test_the_assets_are_cached_and_a_missing_one_is_a_404_problem(system):
    system.start_apis(1)
    script = httpx.get(f"{system.url}{ASSETS_PATH}/swagger-ui-bundle.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert "max-age=86400" in script.headers["cache-control"]
    missing = httpx.get(f"{system.url}{ASSETS_PATH}/redoc.standalone.js", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

"""The OpenAPI page (``/schema``): Swagger UI served from a pinned package, nothing from elsewhere.

Litestar's render plugins load their scripts, styles, fonts and favicon from CDNs by default
(unpinned ones among them): a blank page in an air-gapped cluster, and someone else's script in
front of the admin API's documentation. Here the page's assets come from the ``swagger-ui-py``
wheel (Swagger UI's own release files, its version fixed by our dependency pin), served under
``/schema/assets/``, like the dashboard, which loads nothing from elsewhere either.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
ASSETS_CACHE_SECONDS = 24 * 3600


def _swagger_ui_assets() -> Path:
    """Swagger UI's release files in the installed wheel, found without importing the package
    (its ``__init__`` loads Jinja and YAML for frameworks we do not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install flashsale's dependencies")
    return Path(spec.submodule_search_locations[0]) / "static"


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    page = SwaggerRenderPlugin(
        path="/",
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )
    return OpenAPIConfig(title=title, version=version, path=SCHEMA_PATH, render_plugins=[page])


def openapi_assets() -> ControllerRouterHandler:
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[_swagger_ui_assets()],
        include_in_schema=False,
        # The files change only with the pinned package, that is, with a new image.
        cache_control=CacheControlHeader(max_age=ASSETS_CACHE_SECONDS, public=True),
    )

"""``create_app()``: the Litestar application; ``serve_app()``: uvicorn's ``--factory`` target.

Building the app connects to nothing; clients open in the lifespan (``service.api.lifespan``).
``FlashsaleApp`` puts the front door (``service.api.front_door``) in front of Litestar's router:
a plain ``POST /buy`` is answered there (``service.api.fast_buy``) without reaching anything
configured below, app-level middleware, hooks and exception handlers included (see that
module for what both paths share).
"""

from __future__ import annotations

import msgspec
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi.spec import OpenAPI
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import Receive, Scope, Send
from opentelemetry.instrumentation.asgi import OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS
from opentelemetry.util.http import get_custom_headers

from service.api.front_door import FrontDoor
from service.api.lifespan import provide_dashboard, provide_resources, resources_lifespan
from service.api.openapi_page import openapi_assets, openapi_config
from service.api.problems import exception_handlers, problem_details_plugin
from service.api.request_body import StrictJsonRequest
from service.api.routes.admin import AdminController
from service.api.routes.backlog import backlog
from service.api.routes.buy import buy
from service.api.routes.dashboard import DashboardPlugin
from service.api.routes.health import healthz, readyz
from service.api.routes.metrics import MetricsController
from service.api.routes.orders import get_order
from service.api.routes.products import get_product
from service.api.schemas import MAX_BODY_BYTES
from service.core.logs import configure_logging
from service.core.settings import Settings, get_settings
from service.core.tracing import configure_tracing


def _cors(settings: Settings) -> CORSConfig | None:
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "idempotency-key"],
        expose_headers=["location", "retry-after", "ratelimit", "ratelimit-policy"],
    )


UNTRACED_PATHS = ["/metrics", "/backlog", "/healthz", "/readyz", "/dashboard"]


class FlashsaleApp(Litestar):
    """Litestar, with the front door in front of its router."""

    def __init__(self, *, request_log_level: str, **config) -> None:
        super().__init__(**config)
        self._front_door = FrontDoor(request_log_level)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        await self._front_door(scope, receive, send, self.state, super().__call__)


def create_app(settings: Settings | None = None) -> FlashsaleApp:
    settings = settings or get_settings()
    plugins = [problem_details_plugin()]
    plugins.append(DashboardPlugin())
    on_shutdown = []
    tracer_provider = configure_tracing("flashsale-api")
    if tracer_provider is not None:
        # Credentials stay out of spans even when OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* records
        # every header (the operator's own sanitize list is kept; these are matched as regexes).
        redacted = ["authorization", "cookie", settings.api_key_header]
        redacted += get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)
        otel = OpenTelemetryConfig(
            tracer_provider=tracer_provider,
            exclude=UNTRACED_PATHS,
            http_capture_headers_sanitize_fields=redacted,
        )
        plugins.append(OpenTelemetryPlugin(otel))
        # Spans of the last requests leave too. (A hook with parameters is handed the app.)
        on_shutdown.append(lambda: tracer_provider.force_flush())
    app = FlashsaleApp(
        route_handlers=[
            buy,
            get_order,
            get_product,
            healthz,
            readyz,
            backlog,
            AdminController,
            MetricsController,
            openapi_assets(),
        ],
        dependencies={
            "resources": Provide(provide_resources, sync_to_thread=False),
            "dashboard": Provide(provide_dashboard, sync_to_thread=False),
        },
        lifespan=[resources_lifespan(settings)],
        plugins=plugins,
        on_shutdown=on_shutdown,
        exception_handlers=exception_handlers(settings),
        request_log_level=settings.request_log_level,
        cors_config=_cors(settings),
        request_max_body_size=MAX_BODY_BYTES,
        request_class=StrictJsonRequest,
        openapi_config=openapi_config(title="flashsale", version="0.1.0"),
        logging_config=None,  # service.core.logs owns logging: JSON lines
        debug=False,
    )
    _correct_openapi(app.openapi_schema)
    return app


def _correct_openapi(openapi: OpenAPI) -> None:
    """What Litestar's generated document gets wrong about our bodies."""
    # Litestar marks every request body required; /buy's is not (no body buys one of product 1).
    openapi.paths["/buy"].post.request_body.required = False
    # It leaves out that a forbid_unknown_fields body refuses members it does not declare.
    schemas = openapi.components.schemas
    structs = [msgspec.Struct]
    while structs:
        struct = structs.pop()
        structs += struct.__subclasses__()
        if struct.__struct_config__.forbid_unknown_fields and struct.__name__ in schemas:
            schemas[struct.__name__].additional_properties = False


def serve_app() -> FlashsaleApp:
    """The app as uvicorn serves it: with ``--processes`` above one, each API process is a
    fresh interpreter that ran none of the CLI's set-up, so logging is configured here too
    (else its lines would leave as bare text through Python's last-resort handler)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return create_app(settings)

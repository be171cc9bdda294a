"""``/dashboard``: a live page of the sale; ``/dashboard/events`` (SSE) and ``/dashboard/snapshot`` feed it.

The page is one static HTML file with its script and styles beside it (``service/api/static``):
no build step, nothing fetched from elsewhere, so it works offline on a laptop at the drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Controller, Response, get
from litestar.config.app import AppConfig
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.plugins import InitPluginProtocol
from litestar.response import File, ServerSentEvent, ServerSentEventMessage
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from service.api.dashboard import FRESH_SECONDS, DashboardFeed
from service.api.problems import problem, problem_body

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
RECONNECT_MS = 2000
"""What EventSource waits before reconnecting (to any pod behind the load balancer)."""


def _unavailable_problem(exc: Exception) -> str:
    # Sent inside the stream, where no HTTP status can change any more: the same RFC 9457 body.
    return problem_body(
        problem(503, "unavailable", f"A backing service is unavailable ({type(exc).__name__}); retrying.")
    ).decode()


async def snapshot_events(feed: DashboardFeed) -> AsyncIterator[ServerSentEventMessage]:
    """A snapshot every second until the client goes away (Litestar cancels this generator on
    ``http.disconnect``) or the process is asked to stop (``feed.closing``)."""
    while not feed.closing.is_set():
        try:
            snapshot = await feed.snapshot()
        except (RedisError, OperationalError, OSError) as exc:
            log.warning("dashboard snapshot failed", extra={"error": type(exc).__name__})
            yield ServerSentEventMessage(event="problem", data=_unavailable_problem(exc))
        else:
            yield ServerSentEventMessage(event="snapshot", data=json.dumps(snapshot, separators=(",", ":")))
        with contextlib.suppress(TimeoutError):  # the usual way out: a second has passed
            await asyncio.wait_for(feed.closing.wait(), FRESH_SECONDS)
    # The page reconnects by itself, to another pod once this one has left the load balancer.
    yield ServerSentEventMessage(event="bye", data="{}", retry=RECONNECT_MS)


class DashboardController(Controller):
    path = "/dashboard"
    tags = ["dashboard"]

    @get("", summary="The live sale dashboard (HTML)", operation_id="dashboard", include_in_schema=False)
    async def page(self) -> File:
        return File(STATIC_DIR / "dashboard.html", content_disposition_type="inline", media_type="text/html")

    @get(
        "/static/{name:str}",
        summary="The dashboard's script and styles",
        operation_id="dashboardStatic",
        include_in_schema=False,
    )
    async def static(self, name: FromPath[str]) -> File:
        if name not in PAGE_FILES:
            raise problem(404, "not-found", f"There is no dashboard file {name}.")
        return File(STATIC_DIR / name, content_disposition_type="inline", media_type=PAGE_FILES[name])

    @get("/snapshot", summary="The sale's numbers now (JSON)", operation_id="dashboardSnapshot")
    async def snapshot(self, dashboard: NamedDependency[DashboardFeed]) -> Response[dict[str, Any]]:
        return Response(await dashboard.snapshot(), headers={"Cache-Control": "no-store"})

    @get(
        "/events",
        summary="The sale's numbers every second (server-sent events)",
        operation_id="dashboardEvents",
        include_in_schema=False,  # a stream that never ends: nothing OpenAPI clients can call
    )
    async def events(self, dashboard: NamedDependency[DashboardFeed]) -> ServerSentEvent:
        return ServerSentEvent(
            snapshot_events(dashboard),
            retry_duration=RECONNECT_MS,
            # Proxies (nginx, Traefik buffering) must pass each event on as it comes.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


class DashboardPlugin(InitPluginProtocol):
    """The dashboard's routes (the ``POST /buy`` outcomes it shows are counted by
    ``service.api.front_door``, which sees every answer, the cheap no's included)."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.append(DashboardController)
        return app_config

"""One log line per request outcome: method, path, status, milliseconds (no bodies, no
client addresses: those are personal data). Probes and scrapes are not logged."""

from __future__ import annotations

import logging
import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("flashsale.requests")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def request_log_middleware(level_name: str):
    """ASGI middleware logging each finished request at FLASHSALE_REQUEST_LOG_LEVEL."""
    level = logging.getLevelName(level_name)

    def middleware(app: ASGIApp) -> ASGIApp:
        async def logged(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] in QUIET_PATHS or not log.isEnabledFor(level):
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500  # what the client gets if the app dies before it answers

            async def remember_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, remember_status)
            finally:
                log.log(
                    level,
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )

        return logged

    return middleware

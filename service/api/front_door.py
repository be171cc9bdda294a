"""The front door: one layer in front of Litestar's router (``service.api.app.FlashsaleApp``
calls it with every request).

Every request but the probes, scrapes and the dashboard passes here once: a plain
``POST /buy`` is answered at once (``service.api.fast_buy``, which says what that path leaves
out of Litestar), and every answer, fast or not, is counted (request metrics, the dashboard's
/buy outcomes) and logged in one place. Doing this outside Litestar's per-route middleware
costs a fraction of it and sees what the exception handlers send.
"""

from __future__ import annotations

import logging
import time

from litestar.datastructures import State
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from service.api.fast_buy import answer_buy
from service.api.http_server import READ_TIMED_OUT
from service.core.metrics import REQUEST_ERRORS, REQUEST_SECONDS, REQUESTS
from service.sale.stats import BUY_PATH, OUTCOME_COUNTS, outcome_of, replayed_in

request_log = logging.getLogger("flashsale.requests")
UNCOUNTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/backlog"})
"""Probes and scrapes: frequent, uninteresting, and not worth a metric or a log line."""
DASHBOARD_PREFIX = "/dashboard"  # a stream: its "duration" is how long someone watched
UNMATCHED = "unmatched"
"""The path label of a request no route matched (never the raw path: unbounded labels)."""


class FrontDoor:
    def __init__(self, request_log_level: str) -> None:
        self._log_level = logging.getLevelName(request_log_level)
        self._children: dict[tuple[str, str, int], tuple] = {}

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, state: State, router: ASGIApp
    ) -> None:
        """Answer, count and log one request; ``router`` is Litestar's own ``__call__``, and
        ``state`` the app's (its ``resources`` once the lifespan has opened them)."""
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNCOUNTED_PATHS or path.startswith(DASHBOARD_PREFIX):
            await router(scope, receive, send)
            return
        started = time.perf_counter()
        buying = path == BUY_PATH and scope["method"] == "POST"
        status, replayed = 500, False  # what uvicorn answers if the app dies before it does
        answered_in = None  # the context the answer was sent in: the request's span, if traced

        async def remember(message: Message) -> None:
            nonlocal status, replayed, answered_in
            if message["type"] == "http.response.start":
                status = message["status"]
                replayed = buying and replayed_in(message.get("headers", ()))
                answered_in = otel_context.get_current()
            await send(message)

        try:
            if buying and (resources := getattr(state, "resources", None)) is not None:
                answer, receive = await answer_buy(resources, scope, receive)
                if answer is not None:
                    scope["path_template"] = BUY_PATH
                    await remember(
                        {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
                    )
                    await send({"type": "http.response.body", "body": answer.body})
                    return
            await router(scope, receive, remember)
        finally:
            self._account(scope, buying, status, replayed, time.perf_counter() - started, answered_in)

    def _metrics_for(self, method: str, path: str, status: int) -> tuple:
        """The metric children of one (method, route, status), looked up once: prometheus_client's
        ``labels()`` costs microseconds a call. Bounded: methods, routes and statuses are."""
        key = (method, path, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, path, str(status), "flashsale")
            errors = REQUEST_ERRORS.labels(*labels) if status >= 500 else None
            children = self._children[key] = (
                REQUESTS.labels(*labels),
                REQUEST_SECONDS.labels(*labels),
                errors,
            )
        return children

    def _account(
        self,
        scope: Scope,
        buying: bool,
        status: int,
        replayed: bool,
        seconds: float,
        answered_in: Context | None,
    ) -> None:
        if status >= 500 and READ_TIMED_OUT in scope:  # the body never came; the client got a 408
            status = 408
        path = scope.get("path_template") or UNMATCHED
        requests, durations, errors = self._metrics_for(scope["method"], path, status)
        requests.inc()
        durations.observe(seconds)
        if errors is not None:
            errors.inc()
        if buying and (outcome := outcome_of(status, replayed)):
            OUTCOME_COUNTS.count(outcome)
        if not request_log.isEnabledFor(self._log_level):
            return
        # Logged in the context the answer left in, so the line carries the request's trace id.
        token = otel_context.attach(answered_in) if answered_in is not None else None
        try:
            request_log.log(  # no bodies, no client addresses
                self._log_level,
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
        finally:
            if token is not None:
                otel_context.detach(token)

"""Probes: ``/healthz`` says the process is alive; ``/readyz`` that it can serve."""

from __future__ import annotations

import asyncio

from anyio import to_thread
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from opentelemetry.instrumentation.utils import suppress_instrumentation

from db.session import database_reachable
from service.resources import Resources

READY_CHECK_TIMEOUT_SECONDS = 2.0


@get("/healthz", summary="Liveness", operation_id="healthz")
async def healthz() -> dict[str, str]:
    # Never checks Redis or PostgreSQL: a dependency blip must not restart every pod.
    return {"status": "ok"}


async def _redis_ok(client) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), READY_CHECK_TIMEOUT_SECONDS))
    except Exception:
        return False


@get(
    "/readyz",
    summary="Readiness",
    operation_id="readyz",
    responses={
        503: ResponseSpec(dict, description="Not ready: the failing check says why", generate_examples=False)
    },
)
async def readyz(resources: NamedDependency[Resources]) -> Response[dict]:
    with suppress_instrumentation():  # a probe every few seconds per pod: not worth traces
        checks = {
            "redis": await _redis_ok(resources.redis),
            "database": await to_thread.run_sync(database_reachable, resources.engine),
            "accepting": resources.ready,
        }
        # The limiter is reported, not required: a route that fails open must keep serving
        # while the limiter's Redis is away, so its pods stay ready.
        limiter = {
            "redis": await _redis_ok(resources.limiter_redis),
            "breaker": resources.limiter.breaker.state.value,
            "degraded": resources.limiter.degraded,
        }
    ready = all(checks.values())
    return Response(
        {"status": "ready" if ready else "unavailable", "checks": checks, "limiter": limiter},
        status_code=200 if ready else 503,
    )

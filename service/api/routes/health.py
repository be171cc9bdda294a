"""Probes: ``/healthz`` says the process is alive; ``/readyz`` that this pod can serve.

Readiness is about the pod, not about what every pod shares. ``/buy`` needs only the main
Redis (admission, the stock gate and the queue live there), so a pod is ready while the main
Redis answers and it is accepting requests. PostgreSQL and the limiter's Redis are reported in
the body and never fail it: a PostgreSQL blip would otherwise pull every API pod out of its
Service at once and turn "orders wait in the queue" into "nobody can buy", and a limiter
that fails open keeps serving while its Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from anyio import to_thread
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisClusterException, RedisError
from sqlalchemy import Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.core.logs import Throttled
from service.sale.resources import Resources

READY_CHECK_TIMEOUT_SECONDS = 2.0
UNAVAILABLE_ERRORS = (RedisError, OSError, TimeoutError)
"""A dependency that cannot answer (the app's other 503s are these too). Anything else raised
by a check is a bug: it answers 500, never a quiet "not ready"."""
LIMITER_UNAVAILABLE_ERRORS = (*UNAVAILABLE_ERRORS, RedisClusterException, RuntimeError)
"""As the limiter judges its own Redis: a cluster with no reachable node raises
RedisClusterException, and its node connections report uvloop's closed transport as
RuntimeError."""
NOT_READY_LOG = Throttled(logging.getLogger(__name__))
UNREACHABLE_LOG = Throttled(logging.getLogger(__name__))


@get("/healthz", summary="Liveness", operation_id="healthz")
async def healthz() -> dict[str, str]:
    # Never checks Redis or PostgreSQL: a dependency blip must not restart every pod.
    return {"status": "ok"}


async def _ping_problem(client, unavailable: tuple[type[BaseException], ...]) -> str | None:
    """None when the Redis answers PING in time, else the kind of error it gave."""
    try:
        await asyncio.wait_for(client.ping(), READY_CHECK_TIMEOUT_SECONDS)
    except unavailable as exc:
        return type(exc).__name__
    return None


def database_problem(engine: Engine) -> str | None:
    """``SELECT 1`` (connectivity only, never the schema): None when it works, else why not,
    also logged. Only a server out of reach counts; any other error is a bug and raises."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
        # The driver's own words ("connection refused", "password authentication failed"),
        # without SQLAlchemy's statement and link; libpq never repeats a password in them.
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        UNREACHABLE_LOG.warning(
            type(exc).__name__, "database unreachable", error=type(exc).__name__, reason=reason
        )
        return reason
    return None


async def _database_problem(resources: Resources) -> str | None:
    """``database_problem`` off the event loop, given up after the check timeout (the
    thread is left to finish): a hung PostgreSQL must not hold the answer about this pod."""
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_SECONDS):
            return await to_thread.run_sync(database_problem, resources.engine, abandon_on_cancel=True)
    except TimeoutError:
        return f"no answer within {READY_CHECK_TIMEOUT_SECONDS:g}s"


@get(
    "/readyz",
    summary="Readiness: the main Redis answers and the process accepts requests",
    operation_id="readyz",
    responses={503: ResponseSpec(dict, description="Not ready: `reason` says why", generate_examples=False)},
)
async def readyz(resources: NamedDependency[Resources]) -> Response[dict]:
    with suppress_instrumentation():  # a probe every few seconds per pod: not worth traces
        # Side by side, so the answer takes one check's timeout at most, within the probe's
        # own (3 s in the chart) even when every dependency hangs.
        redis_problem, database, limiter_problem = await asyncio.gather(
            _ping_problem(resources.redis, UNAVAILABLE_ERRORS),
            _database_problem(resources),
            _ping_problem(resources.limiter_redis, LIMITER_UNAVAILABLE_ERRORS),
        )
    body = {
        "checks": {"redis": redis_problem is None, "accepting": resources.ready},
        "database": {"reachable": database is None, "error": database},
        "limiter": {
            "redis": limiter_problem is None,
            "breaker": resources.limiter.breaker.state.value,
            "degraded": resources.limiter.degraded,
            # The same digest on every pod: they all enforce the same policy.
            "policy": {
                "digest": resources.limiter.active.digest,
                "loaded_at": datetime.fromtimestamp(resources.limiter.active.loaded_at, UTC).isoformat(),
            },
        },
    }
    if redis_problem:
        reason = f"main Redis: {redis_problem}"
    elif not resources.ready:
        reason = "shutting down"
    else:
        return Response({"status": "ready", **body}, status_code=200)
    NOT_READY_LOG.warning(reason, "not ready", reason=reason)
    return Response({"status": "unavailable", "reason": reason, **body}, status_code=503)

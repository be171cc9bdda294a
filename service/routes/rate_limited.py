"""Apply a route's rate-limit policy to a request: the HTTP side of ``service.ratelimit``."""

from __future__ import annotations

import math

from litestar import Request
from litestar.plugins.problem_details import ProblemDetailsException

from service.errors import problem
from service.identity import ClientIdentity, client_identity
from service.ratelimit import Outcome, Verdict, ratelimit_headers
from service.resources import Resources


def limited_problem(verdict: Verdict, headers: dict[str, str]) -> ProblemDetailsException:
    return problem(
        429,
        "rate-limited",
        f"Too many requests ({', '.join(verdict.violated)}); retry in {verdict.retry_after_seconds}s.",
        headers=headers,
        violated=verdict.violated,
    )


async def enforce_rate_limit(
    route: str, request: Request, resources: Resources
) -> tuple[ClientIdentity, dict]:
    """Who is asking and the RateLimit headers to send; raises the 429 or 503 problem."""
    client = client_identity(request, resources.settings)
    verdict = await resources.limiter.check(route, client)
    refuse_unless_admitted(verdict, resources)
    return client, ratelimit_headers(verdict, resources.settings.rate_legacy_headers)


def refuse_unless_admitted(verdict: Verdict, resources: Resources) -> None:
    """Raise the 429 or 503 problem of a verdict that does not let the request on."""
    if verdict.outcome not in (Outcome.LIMITED, Outcome.FAILED_CLOSED):
        return
    headers = ratelimit_headers(verdict, resources.settings.rate_legacy_headers)
    if verdict.outcome is Outcome.LIMITED:
        raise limited_problem(verdict, headers)
    retry_after = math.ceil(resources.limiter.breaker.cooldown_seconds)
    raise problem(
        503,
        "limiter-unavailable",
        "The rate limiter cannot decide right now, so nothing was admitted; try again shortly.",
        headers={**headers, "Retry-After": str(retry_after)},
    )

"""Apply a route's rate-limit policy to a request: the HTTP side of ``service.limiter.ratelimit``."""

from __future__ import annotations

from litestar import Request

from service.api.client_identity import client_identity
from service.limiter.identity import ClientIdentity
from service.limiter.ratelimit import ratelimit_headers
from service.limiter.refusals import refuse_unless_admitted
from service.sale.resources import Resources


async def enforce_rate_limit(
    route: str, request: Request, resources: Resources
) -> tuple[ClientIdentity, dict]:
    """Who is asking and the RateLimit headers to send; raises the limiter's refusal (a 429 or
    503 through ``service.api.problems``)."""
    client = client_identity(request, resources.settings)
    verdict = await resources.limiter.check(route, client)
    refuse_unless_admitted(verdict, resources.limiter)
    return client, ratelimit_headers(verdict, resources.settings.rate_legacy_headers)

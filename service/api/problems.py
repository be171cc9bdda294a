"""RFC 9457 problem details for every error the API returns, expected or not.

``problem_for`` is the one map from domain refusals (and failures) to problems: the app's
exception handlers and the fast path of ``POST /buy`` both answer through it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from service.core.logs import Throttled
from service.core.refusals import Refusal
from service.core.settings import Settings
from service.limiter.ratelimit import ratelimit_headers
from service.limiter.refusals import LimiterUnavailable, RateLimited
from service.sale.refusals import (
    IdempotencyKeyReused,
    InsufficientStock,
    InvalidIdempotencyKey,
    PurchaseLimit,
    SaleClosed,
    SaleNotOpen,
    SoldOut,
    UnknownProduct,
)

log = logging.getLogger(__name__)
PROBLEM_TYPE_PREFIX = "urn:flashsale:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
UNAVAILABLE_RETRY_AFTER_SECONDS = 1


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem as the OpenAPI document shows it; some types add members
    (``errors``, ``available``, ``violated``…), which the schema allows."""

    status: int
    title: str
    type: str = "about:blank"
    detail: str | None = None


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The problems a route may answer, for its ``responses=`` (the OpenAPI document)."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=HTTPStatus(status).phrase,
            generate_examples=False,
        )
        for status in statuses
    }


def problem(
    status: int,
    slug: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemDetailsException:
    """An exception that renders as ``application/problem+json`` with our ``type`` URI."""
    return ProblemDetailsException(
        status_code=status,
        type_=PROBLEM_TYPE_PREFIX + slug,
        title=HTTPStatus(status).phrase,
        detail=detail,
        headers=headers,
        extra=extra or None,
    )


def problem_body(exc: ProblemDetailsException) -> bytes:
    """The JSON body Litestar renders for ``exc``, for answers made outside a route handler."""
    document: dict[str, Any] = {"status": exc.status_code, "type": exc.type_, "title": exc.title}
    if exc.detail is not None:
        document["detail"] = exc.detail
    if isinstance(exc.extra, dict):
        document.update(exc.extra)
    return msgspec.json.encode(document)


def _from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    # Router 404/405 and framework errors keep their status; "about:blank" per RFC 9457.
    return ProblemDetailsException(
        status_code=exc.status_code,
        title=HTTPStatus(exc.status_code).phrase,
        detail=exc.detail,
        headers=exc.headers,
    )


def _from_validation(exc: ValidationException) -> ProblemDetailsException:
    errors = exc.extra if isinstance(exc.extra, list) else []
    return problem(
        400,
        "invalid-request",
        "The request body or parameters are not valid.",
        errors=[{"field": e.get("key"), "message": e.get("message")} for e in errors],
    )


UNAVAILABLE_LOG = Throttled(log)
"""One line per error kind a second at most, however many 503s an outage answers."""


def unavailable_problem(path: str, exc: Exception) -> ProblemDetailsException:
    """Redis or PostgreSQL failed: a 503 the client may retry soon."""
    kind = type(exc).__name__
    UNAVAILABLE_LOG.warning(kind, "dependency unavailable", path=path, error=kind)
    return problem(
        503,
        "unavailable",
        "A backing service is unavailable; try again shortly.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )


def internal_problem(path: str, exc: Exception) -> ProblemDetailsException:
    """A bug: logged with its traceback for us (call it inside ``except``); the client sees no internals."""
    log.exception("unhandled error", extra={"path": path})
    return problem(500, "internal", "Something went wrong on our side.")


def _retry_after(headers: dict[str, str], seconds: int) -> dict[str, str]:
    return {**headers, "Retry-After": str(seconds)}


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def _rate_limited(refusal: RateLimited, headers: dict[str, str]) -> ProblemDetailsException:
    verdict = refusal.verdict
    return problem(
        429,
        "rate-limited",
        f"Too many requests ({', '.join(verdict.violated)}); retry in {verdict.retry_after_seconds}s.",
        headers=headers,
        violated=verdict.violated,
    )


def _limiter_unavailable(refusal: LimiterUnavailable, headers: dict[str, str]) -> ProblemDetailsException:
    return problem(
        503,
        "limiter-unavailable",
        "The rate limiter cannot decide right now, so nothing was admitted; try again shortly.",
        headers=_retry_after(headers, refusal.retry_after_seconds),
    )


def _sale_not_open(refusal: SaleNotOpen, headers: dict[str, str]) -> ProblemDetailsException:
    opens_in = max(1, math.ceil((refusal.opens_at_ms - time.time() * 1000) / 1000))
    return problem(
        409,
        "sale-not-open",
        f"The sale of product {refusal.product_id} has not opened yet.",
        headers=_retry_after(headers, opens_in),
        opens_at=_iso(refusal.opens_at_ms),
    )


REFUSAL_PROBLEMS: dict[type[Refusal], Callable[[Any, dict[str, str]], ProblemDetailsException]] = {
    RateLimited: _rate_limited,
    LimiterUnavailable: _limiter_unavailable,
    InvalidIdempotencyKey: lambda _, headers: problem(
        400, "invalid-idempotency-key", "Idempotency-Key must be 1-255 printable ASCII characters."
    ),
    UnknownProduct: lambda refusal, headers: problem(
        422, "unknown-product", f"There is no product {refusal.product_id}.", product_id=refusal.product_id
    ),
    IdempotencyKeyReused: lambda refusal, headers: problem(
        422,
        "idempotency-key-reused",
        "This Idempotency-Key was already used for a different request.",
        headers=headers,
        order_id=refusal.order_id,
    ),
    SoldOut: lambda refusal, headers: problem(
        409, "sold-out", f"Product {refusal.product_id} is sold out.", headers=headers
    ),
    InsufficientStock: lambda refusal, headers: problem(
        409,
        "insufficient-stock",
        f"Only {refusal.available} unit(s) of product {refusal.product_id} are left.",
        headers=headers,
        available=refusal.available,
    ),
    SaleNotOpen: _sale_not_open,
    SaleClosed: lambda refusal, headers: problem(
        409,
        "sale-closed",
        f"The sale of product {refusal.product_id} is over.",
        headers=headers,
        closed_at=_iso(refusal.closed_at_ms),
    ),
    PurchaseLimit: lambda refusal, headers: problem(
        409,
        "purchase-limit",
        f"This exceeds the per-customer limit of product {refusal.product_id}.",
        headers=headers,
        remaining=refusal.remaining,
    ),
}
"""Each domain refusal's problem, given the RateLimit fields of its verdict (if any)."""


def problem_for(exc: Exception, path: str, legacy_headers: bool) -> ProblemDetailsException:
    """THE map from what a request raised to the problem its client gets, for the Litestar
    routes (``exception_handlers``) and ``POST /buy``'s fast path (``service.api.fast_buy``)
    alike: a domain refusal its own problem, with the RateLimit fields of its verdict; Redis or
    PostgreSQL failing a 503; anything else a 500 (call it inside ``except``: it logs the
    traceback)."""
    if isinstance(exc, Refusal):
        headers = ratelimit_headers(exc.verdict, legacy_headers) if exc.verdict else {}
        return REFUSAL_PROBLEMS[type(exc)](exc, headers)
    if isinstance(exc, RedisError | OperationalError):
        return unavailable_problem(path, exc)
    return internal_problem(path, exc)


def exception_handlers(settings: Settings) -> dict[type[Exception], Callable[[Request, Exception], Response]]:
    """The app's handlers of everything ``problem_for`` maps (HTTP errors are the plugin's)."""

    def handle(request: Request, exc: Exception) -> Response:
        return problem_for(exc, request.url.path, settings.rate_legacy_headers).to_response(request)

    return dict.fromkeys((Refusal, RedisError, OperationalError, Exception), handle)


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            enable_for_all_http_exceptions=True,
            exception_to_problem_detail_map={
                HTTPException: _from_http_exception,
                ValidationException: _from_validation,
            },
        )
    )

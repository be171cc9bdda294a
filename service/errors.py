"""RFC 9457 problem details for every error the API returns, expected or not."""

from __future__ import annotations

import logging
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

from service.logs import Throttled

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


def _unavailable(request: Request, exc: Exception) -> Response:
    return unavailable_problem(request.url.path, exc).to_response(request)


def _internal_error(request: Request, exc: Exception) -> Response:
    return internal_problem(request.url.path, exc).to_response(request)


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


EXCEPTION_HANDLERS = {
    RedisError: _unavailable,
    OperationalError: _unavailable,
    Exception: _internal_error,
}

"""How the API reads request bodies: JSON only, and no JSON that can break the decoder."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import SerializationException, ValidationException
from litestar.handlers import BaseRouteHandler
from litestar.plugins.problem_details import ProblemDetailsException

from service.api.problems import problem

JSON_MEDIA_TYPE = "application/json"


def is_json(content_type: str | None) -> bool:
    """``application/json`` (parameters such as charset aside), or no Content-Type at all
    (a script's bare body is read as JSON)."""
    return content_type is None or content_type.partition(";")[0].strip().lower() == JSON_MEDIA_TYPE


def unsupported_media_type() -> ProblemDetailsException:
    return problem(415, "unsupported-media-type", "Send the body as JSON (Content-Type: application/json).")


def json_bodies_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """A guard: a body declared as anything but JSON (a form, text/plain) is 415 before a byte
    of it is read. Those are the types a browser sends cross-site without a CORS preflight."""
    if not is_json(connection.headers.get("content-type")):
        raise unsupported_media_type()


class StrictJsonRequest(Request):
    """Litestar's request, holding a route's JSON body to its declared type as the OpenAPI
    document states it. Litestar alone converts leniently ("2" passes for an integer, 0 for a
    date-time), and the decoder errors msgspec raises besides ``DecodeError`` (RecursionError
    for 10,000 nested arrays, UnicodeDecodeError for invalid UTF-8) were 500s: all are 400s."""

    async def json(self) -> Any:
        try:
            value = await super().json()
            if (data := self.route_handler.parsed_data_field) is not None:
                msgspec.convert(_whole_numbers(value), data.annotation, strict=True)
        except msgspec.ValidationError as exc:
            message, _, where = str(exc).partition(" - at `$")
            raise ValidationException(
                "The request body is not valid.",
                extra=[{"key": where.strip("`.") or "data", "message": message}],
            ) from exc
        except RecursionError as exc:
            raise SerializationException("JSON is malformed: nested too deeply") from exc
        except UnicodeDecodeError as exc:
            raise SerializationException("JSON is malformed: not valid UTF-8") from exc
        return value


def _whole_numbers(value: Any) -> Any:
    """``value`` with 18.0 as 18: JSON Schema counts a number without a fraction as an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value

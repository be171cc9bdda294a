"""``POST /buy`` answered in front of Litestar's router whenever the request is plain.

A sale is one route under a flood, and most of a Litestar request's cost is the framework
around the handler (routing, dependency and signature machinery, response objects). Here a
plain request (a JSON body that decodes at once, no tracing to record, no browser CORS
exchange) is decided by the same ``decide_buy`` the route runs, and its answer written
directly: a 202, or the problem the route would send (429 from the deny cache and 409 from
the sold-out latch need no Redis call at all). Anything else, and every body that does not
decode or is not declared JSON, goes the full way, which answers it as documented (400, 413,
415…).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar import Request
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import Receive, Scope
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from service.errors import internal_problem, problem_body, unavailable_problem
from service.ratelimit import Verdict
from service.request_body import is_json
from service.resources import Resources
from service.routes.buy import LimitedFromMemory, decide_buy, memory_limited_problem
from service.schemas import MAX_BODY_BYTES, BuyRequest
from service.tracing import tracing_on

_DECODER = msgspec.json.Decoder(BuyRequest)
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _answer(status: int, content_type: bytes, body: bytes, headers: dict[str, str] | None) -> Answer:
    raw = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return Answer(status, raw, body)


def _problem_answer(problem: ProblemDetailsException) -> Answer:
    return _answer(problem.status_code, b"application/problem+json", problem_body(problem), problem.headers)


MEMORY_LIMITED_ANSWERS = 4096
"""Rendered 429s kept; one per policy, limit and whole second to wait, so a few dozen in use."""
_memory_limited: dict[tuple, Answer] = {}


def _memory_limited_answer(verdict: Verdict, legacy_headers: bool) -> Answer:
    """A 429 from the deny cache, rendered once per policy, limit and whole second to wait
    (everything in it follows from those): a hammering client costs a dictionary lookup."""
    policy = tuple(verdict.policy.limits)  # by value: limits are frozen, so hashable
    key = (policy, verdict.states[0].limit.name, verdict.retry_after_seconds, legacy_headers)
    answer = _memory_limited.get(key)
    if answer is None:
        if len(_memory_limited) >= MEMORY_LIMITED_ANSWERS:
            _memory_limited.clear()
        answer = _memory_limited[key] = _problem_answer(memory_limited_problem(verdict, legacy_headers))
    return answer


async def answer_buy(resources: Resources, scope: Scope, receive: Receive) -> tuple[Answer | None, Receive]:
    """This ``POST /buy``'s answer, or None for the full path, with the ``receive`` that path
    must use instead (it replays the body read here)."""
    request = Request(scope, receive)
    if tracing_on() or (resources.settings.cors_origins and "origin" in request.headers):
        return None, receive  # Litestar's tracing and CORS layers must see these
    if not is_json(request.headers.get("content-type")):
        return None, receive  # the route's guard answers 415 before the body is read
    message = await receive()
    replay = _replaying(message, receive)
    body = message.get("body", b"")
    if message["type"] != "http.request" or message.get("more_body") or len(body) > MAX_BODY_BYTES:
        return None, replay
    try:
        wanted = _DECODER.decode(body) if body else BuyRequest()
    # Bad JSON or not a BuyRequest: the route answers its 400. msgspec raises more than its
    # DecodeError (a UnicodeDecodeError for invalid UTF-8 in a key, a RecursionError): all of it.
    except (ValueError, RecursionError):
        return None, replay
    try:
        accepted, headers = await decide_buy(resources, request, wanted)
    except LimitedFromMemory as denial:
        return _memory_limited_answer(denial.verdict, resources.settings.rate_legacy_headers), replay
    except ProblemDetailsException as problem:
        return _problem_answer(problem), replay
    except (RedisError, OperationalError) as exc:
        return _problem_answer(unavailable_problem(scope["path"], exc)), replay
    except Exception as exc:
        return _problem_answer(internal_problem(scope["path"], exc)), replay
    return _answer(202, b"application/json", _ENCODER.encode(accepted), headers), replay


def _replaying(first: dict, receive: Receive) -> Receive:
    pending = [first]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()

    return replay

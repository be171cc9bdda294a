"""``POST /buy`` answered in front of Litestar's router whenever the request is plain.

A sale is one route under a flood, and most of a Litestar request's cost is the framework
around the handler (routing, dependency and signature machinery, response objects). Here a
plain request (a JSON body that decodes at once, no tracing to record, no browser CORS
exchange) is decided by the same ``service.sale.buy.decide_buy`` the route runs, and its answer
written directly: a 202 (``accepted_answer``, as the route renders it), or the problem the
route would send, from the same map (``service.api.problems.problem_for``; 429 from the deny
cache and 409 from the sold-out latch need no Redis call at all). Anything else, and every
body that does not decode or is not declared JSON, goes the full way, which answers it as
documented (400, 413, 415…).

Where the fast path leaves Litestar out: ``service.api.front_door`` calls ``answer_buy`` from
``FlashsaleApp.__call__``, before Litestar's own ``__call__``; a plain ``POST /buy`` then never
meets Litestar's app-level middleware, hooks (``before_request``…), guards, dependencies or
exception handlers. What both paths share is the decision, ``accepted_answer``, ``problem_for``
and the front door's counting and logging around them. Tracing and CORS, the app-level layers
we have, are left to Litestar by not taking the fast path when they are on. Anything added at
the app level that ``POST /buy`` must pass through needs the same: a condition here that sends
the request the full way, or a call from the front door (``tests/test_front_door.py`` fails
when the app gains middleware or hooks this path does not know of).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar import Request
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import Receive, Scope

from service.api.problems import problem_body, problem_for
from service.api.request_body import is_json
from service.api.routes.buy import accepted_answer, decide
from service.api.schemas import MAX_BODY_BYTES, BuyRequest
from service.core.tracing import tracing_on
from service.limiter.ratelimit import Verdict
from service.limiter.refusals import RateLimited
from service.sale.resources import Resources
from service.sale.stats import BUY_PATH

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
        problem = problem_for(RateLimited(verdict), BUY_PATH, legacy_headers)
        answer = _memory_limited[key] = _problem_answer(problem)
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
    legacy_headers = resources.settings.rate_legacy_headers
    try:
        accepted = await decide(resources, request, wanted)
    except RateLimited as refusal:
        if not refusal.verdict.cached:
            return _problem_answer(problem_for(refusal, scope["path"], legacy_headers)), replay
        return _memory_limited_answer(refusal.verdict, legacy_headers), replay
    except Exception as exc:
        return _problem_answer(problem_for(exc, scope["path"], legacy_headers)), replay
    body, headers = accepted_answer(accepted, legacy_headers)
    return _answer(202, b"application/json", _ENCODER.encode(body), headers), replay


def _replaying(first: dict, receive: Receive) -> Receive:
    pending = [first]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()

    return replay

"""``POST /buy``, the documented route: ``service.sale.buy.decide_buy`` decides, this renders.

A plain request is answered before Litestar's router by ``service.api.fast_buy``, which calls
the same decision and renders through the same ``accepted_answer`` and
``service.api.problems.problem_for``; this route answers the rest.
"""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.params import JSONBody

from service.api.client_identity import client_identity
from service.api.problems import problem_responses
from service.api.request_body import json_bodies_only
from service.api.schemas import BuyAccepted, BuyRequest
from service.limiter.ratelimit import ratelimit_headers
from service.sale.buy import Accepted, decide_buy
from service.sale.resources import Resources


def accepted_answer(accepted: Accepted, legacy_headers: bool) -> tuple[BuyAccepted, dict[str, str]]:
    """The 202's body and headers: where to follow the order, and the RateLimit fields."""
    headers = ratelimit_headers(accepted.verdict, legacy_headers) if accepted.verdict else {}
    status_url = f"/orders/{accepted.order_id}"
    headers["Location"] = status_url
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return BuyAccepted(order_id=accepted.order_id, status_url=status_url), headers


async def decide(resources: Resources, request: Request, wanted: BuyRequest) -> Accepted:
    """``decide_buy`` for this request: its client and Idempotency-Key, the body's purchase."""
    client = client_identity(request, resources.settings)
    key = request.headers.get("idempotency-key")
    return await decide_buy(resources, client, key, wanted.product_id, wanted.quantity)


@post(
    "/buy",
    status_code=202,
    summary="Buy a product",
    operation_id="buy",
    guards=[json_bodies_only],
    responses=problem_responses(400, 408, 409, 413, 415, 422, 429, 503),
)
async def buy(request: Request, data: JSONBody[BuyRequest | None] = None) -> Response[BuyAccepted]:
    """Refusals and failures raise through the app's exception handlers (``problem_for``)."""
    resources = request.app.state.resources
    accepted = await decide(resources, request, data or BuyRequest())
    body, headers = accepted_answer(accepted, resources.settings.rate_legacy_headers)
    return Response(body, status_code=202, headers=headers)

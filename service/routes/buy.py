"""``POST /buy``: rate limits, idempotency, stock gate and enqueue in one atomic step; 202."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime

from anyio import to_thread
from litestar import Request, Response, post
from litestar.params import JSONBody
from litestar.plugins.problem_details import ProblemDetailsException
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from db.orders import find_product
from service.admission import Admission, Decision, admit
from service.errors import problem, problem_responses
from service.identity import ClientIdentity, client_identity
from service.ratelimit import Plan, Verdict, ratelimit_headers
from service.request_body import json_bodies_only
from service.resources import Resources
from service.routes.rate_limited import limited_problem, refuse_unless_admitted
from service.schemas import BuyAccepted, BuyRequest
from worker.reconcile import reconcile_product

MAX_IDEMPOTENCY_KEY_LENGTH = 255


def idempotency_key_of(request: Request) -> str | None:
    """The Idempotency-Key header: an RFC 9651 string ("…") or a bare token, printable ASCII."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise problem(
            400, "invalid-idempotency-key", "Idempotency-Key must be 1-255 printable ASCII characters."
        )
    return key


async def _admit_once_rebuilding_the_gate(
    resources: Resources, client: ClientIdentity, wanted: BuyRequest, key: str | None, plan
) -> Admission:
    admission = await admit(resources, client, plan, wanted.product_id, wanted.quantity, key)
    if admission.decision is not Decision.GATE_MISSING:
        return admission
    product = await to_thread.run_sync(find_product, resources.engine, wanted.product_id)
    if product is None:
        raise problem(
            422, "unknown-product", f"There is no product {wanted.product_id}.", product_id=wanted.product_id
        )
    # Not the database's stock: undecided orders still hold units of it (fs:admitted). The
    # reconciler's own repair counts them, so the rebuilt gate errs low, never high.
    await to_thread.run_sync(
        reconcile_product, resources.queue.connection, resources.engine, wanted.product_id
    )
    admission = await admit(resources, client, plan, wanted.product_id, wanted.quantity, key)
    if admission.decision is Decision.GATE_MISSING:  # gone again at once: Redis is in trouble
        raise RedisError("stock gate missing after rebuild")
    return admission


async def _admit_charged_on_the_limiter(
    resources: Resources, client: ClientIdentity, wanted: BuyRequest, key: str | None, plan: Plan
) -> Admission:
    """With the buckets on a Redis of their own: charge them there, admit on the main Redis, and
    refund them when the admission says no, so a "no" charges nothing in this mode too. The
    yes, the common case under load, pays one call to each Redis as before; only a refusal
    after the limits admitted pays a second limiter call. Its verdict reads the buckets as
    admit.lua's own would: as if a refused request had never come."""
    limiter = resources.limiter
    verdict = await limiter.decide(plan)
    refuse_unless_admitted(verdict, resources)
    try:
        admission = await _admit_once_rebuilding_the_gate(resources, client, wanted, key, None)
    except (ProblemDetailsException, OperationalError):  # an unknown product; no database to tell
        await limiter.refund(plan, verdict)
        raise
    # A main Redis that fails mid-call leaves the tokens taken: admit.lua may have admitted before
    # its reply was lost, and the error stays on the side of the limit.
    if admission.decision is not Decision.ADMITTED:
        verdict = await limiter.refund(plan, verdict)
    return replace(admission, verdict=verdict)


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


# Refusals that need nothing but a problem: status, type, detail, extra members.
_REFUSALS = {
    Decision.KEY_REUSED: (
        422,
        "idempotency-key-reused",
        "This Idempotency-Key was already used for a different request.",
        lambda admission: {"order_id": admission.order_id},
    ),
    Decision.CLOSED: (
        409,
        "sale-closed",
        "The sale of product {product} is over.",
        lambda admission: {"closed_at": _iso(admission.left)},
    ),
    Decision.CUSTOMER_LIMIT: (
        409,
        "purchase-limit",
        "This exceeds the per-customer limit of product {product}.",
        lambda admission: {"remaining": admission.left},
    ),
}


class LimitedFromMemory(Exception):
    """``decide_buy``'s 429 from the deny cache, left for its caller to render: the same few
    answers repeat for as long as a client hammers, and the fast path renders each once."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__()
        self.verdict = verdict


def memory_limited_problem(verdict: Verdict, legacy_headers: bool):
    return limited_problem(verdict, ratelimit_headers(verdict, legacy_headers))


def sold_out_problem(product_id: int, headers: dict[str, str]):
    return problem(409, "sold-out", f"Product {product_id} is sold out.", headers=headers)


async def decide_buy(
    resources: Resources, request: Request, wanted: BuyRequest
) -> tuple[BuyAccepted, dict[str, str]]:
    """Everything ``POST /buy`` decides, for the Litestar route and ``service.fast_buy`` alike:
    the accepted order and the headers of its 202, or a raised problem (400, 409, 422, 429, 503),
    or ``LimitedFromMemory``. Only the body's parsing differs between the two.

    The answers from memory come first, whichever Redis holds the buckets: a client known to be
    over its limit, then a product latched sold out, cost no Redis call and no token. A request
    with an Idempotency-Key may be a retry of one already admitted: only admit.lua, which answers
    replays first, may answer it (never a memory short-cut)."""
    key = idempotency_key_of(request)
    limiter = resources.limiter
    client = client_identity(request, resources.settings)
    plan = limiter.plan("buy", client)
    if key is None:
        if plan and (cached := limiter.cached_denial(plan)):
            raise LimitedFromMemory(cached)
        if resources.sold_out.is_sold_out(wanted.product_id):
            raise sold_out_problem(wanted.product_id, {})
    if limiter.shares_main_redis or plan is None:
        # The limits (if any) are checked, and charged only on a yes, inside the admission call.
        admission = await _admit_once_rebuilding_the_gate(resources, client, wanted, key, plan)
    else:
        admission = await _admit_charged_on_the_limiter(resources, client, wanted, key, plan)
    verdict = admission.verdict
    headers = ratelimit_headers(verdict, resources.settings.rate_legacy_headers) if verdict else {}
    if admission.decision is Decision.LIMITED:
        raise limited_problem(verdict, headers)
    if refusal := _REFUSALS.get(admission.decision):
        status, slug, detail, extra = refusal
        raise problem(
            status, slug, detail.format(product=wanted.product_id), headers=headers, **extra(admission)
        )
    if admission.decision is Decision.NOT_OPEN:
        opens_in = max(1, math.ceil((admission.left - time.time() * 1000) / 1000))
        raise problem(
            409,
            "sale-not-open",
            f"The sale of product {wanted.product_id} has not opened yet.",
            headers={**headers, "Retry-After": str(opens_in)},
            opens_at=_iso(admission.left),
        )
    if admission.decision is Decision.NOT_ENOUGH_STOCK:
        if admission.left == 0:
            resources.sold_out.latch(wanted.product_id)
            raise sold_out_problem(wanted.product_id, headers)
        raise problem(
            409,
            "insufficient-stock",
            f"Only {admission.left} unit(s) of product {wanted.product_id} are left.",
            headers=headers,
            available=admission.left,
        )
    status_url = f"/orders/{admission.order_id}"
    headers["Location"] = status_url
    if admission.decision is Decision.REPLAY:
        headers["Idempotent-Replayed"] = "true"
    return BuyAccepted(order_id=admission.order_id, status_url=status_url), headers


@post(
    "/buy",
    status_code=202,
    summary="Buy a product",
    operation_id="buy",
    guards=[json_bodies_only],
    responses=problem_responses(400, 408, 409, 413, 415, 422, 429, 503),
)
async def buy(request: Request, data: JSONBody[BuyRequest | None] = None) -> Response[BuyAccepted]:
    """The documented route; ``service.fast_buy`` answers the plain requests before it."""
    resources = request.app.state.resources
    try:
        accepted, headers = await decide_buy(resources, request, data or BuyRequest())
    except LimitedFromMemory as denial:
        raise memory_limited_problem(denial.verdict, resources.settings.rate_legacy_headers) from None
    return Response(accepted, status_code=202, headers=headers)

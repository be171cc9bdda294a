"""``POST /buy``'s decision: rate limits, idempotency, stock gate and enqueue in one atomic step.

Plain data in (who the client is, its Idempotency-Key header, the product and quantity it
asks for), an ``Accepted`` order or a domain refusal out (``service.sale.refusals``,
``service.limiter.refusals``). ``service.api`` calls it from the Litestar route and from the
fast path alike and renders both outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from anyio import to_thread
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from db.orders import find_product
from service.core.refusals import Refusal
from service.limiter.identity import ClientIdentity
from service.limiter.ratelimit import Plan, Verdict
from service.limiter.refusals import RateLimited, refuse_unless_admitted
from service.sale.admission import Admission, Decision, admit
from service.sale.latches import Mark
from service.sale.reconcile import reconcile_product
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
from service.sale.resources import Resources

MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Accepted:
    order_id: str
    replayed: bool = False
    """An Idempotency-Key replay: the order of the first request, not a new one."""
    verdict: Verdict | None = None
    """The rate limits' verdict, when the route has limits."""


def idempotency_key_of(raw: str | None) -> str | None:
    """The Idempotency-Key header: an RFC 9651 string ("…") or a bare token, printable ASCII."""
    if raw is None:
        return None
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise InvalidIdempotencyKey()
    return key


async def _admit_once_rebuilding_the_gate(
    resources: Resources, client: ClientIdentity, product_id: int, quantity: int, key: str | None, plan
) -> Admission:
    admission = await admit(resources, client, plan, product_id, quantity, key)
    if admission.decision is not Decision.GATE_MISSING:
        return admission
    product = await to_thread.run_sync(find_product, resources.engine, product_id)
    if product is None:
        raise UnknownProduct(product_id)
    # Not the database's stock: undecided orders still hold units of it (fs:admitted). The
    # reconciler's own repair counts them, so the rebuilt gate errs low, never high.
    await to_thread.run_sync(reconcile_product, resources.queue.connection, resources.engine, product_id)
    admission = await admit(resources, client, plan, product_id, quantity, key)
    if admission.decision is Decision.GATE_MISSING:  # gone again at once: Redis is in trouble
        raise RedisError("stock gate missing after rebuild")
    return admission


async def _admit_charged_on_the_limiter(
    resources: Resources, client: ClientIdentity, product_id: int, quantity: int, key: str | None, plan: Plan
) -> Admission:
    """With the buckets on a Redis of their own: charge them there, admit on the main Redis, and
    refund them when the admission says no, so a "no" charges nothing in this mode too. The
    yes, the common case under load, pays one call to each Redis as before; only a refusal
    after the limits admitted pays a second limiter call. Its verdict reads the buckets as
    admit.lua's own would: as if a refused request had never come."""
    limiter = resources.limiter
    verdict = await limiter.decide(plan)
    refuse_unless_admitted(verdict, limiter)
    try:
        admission = await _admit_once_rebuilding_the_gate(resources, client, product_id, quantity, key, None)
    except (UnknownProduct, OperationalError):  # an unknown product; no database to tell
        await limiter.refund(plan, verdict)
        raise
    # A main Redis that fails mid-call leaves the tokens taken: admit.lua may have admitted before
    # its reply was lost, and the error stays on the side of the limit.
    if admission.decision is not Decision.ADMITTED:
        verdict = await limiter.refund(plan, verdict)
    return replace(admission, verdict=verdict)


def _refusal(
    admission: Admission, product_id: int, resources: Resources, marks: tuple[Mark, Mark]
) -> Refusal | None:
    """The refusal an admission's decision stands for; None for a yes. ``marks``: the sold-out
    and not-open latches' marks, taken before admit.lua was asked."""
    sold_out_mark, not_open_mark = marks
    verdict, left = admission.verdict, admission.left
    match admission.decision:
        case Decision.LIMITED:
            return RateLimited(verdict)
        case Decision.KEY_REUSED:
            return IdempotencyKeyReused(admission.order_id, verdict)
        case Decision.CLOSED:
            return SaleClosed(product_id, left, verdict)
        case Decision.CUSTOMER_LIMIT:
            return PurchaseLimit(product_id, left, verdict)
        case Decision.NOT_OPEN:
            resources.not_open.latch(product_id, not_open_mark, left, admission.now_us)
            return SaleNotOpen(product_id, left, verdict)
        case Decision.NOT_ENOUGH_STOCK if left == 0:
            resources.sold_out.latch(product_id, sold_out_mark)
            return SoldOut(product_id, verdict)
        case Decision.NOT_ENOUGH_STOCK:
            return InsufficientStock(product_id, left, verdict)
    return None


async def decide_buy(
    resources: Resources,
    client: ClientIdentity,
    idempotency_key_header: str | None,
    product_id: int,
    quantity: int,
) -> Accepted:
    """Everything ``POST /buy`` decides: the accepted order, or a raised refusal (the sale's or
    the limiter's); a Redis or PostgreSQL failure raises as it is.

    The answers from memory come first, whichever Redis holds the buckets: a client known to be
    over its limit (a ``RateLimited`` whose verdict is ``cached``), then a product latched sold
    out or not open yet, cost no Redis call and no token. A request with an Idempotency-Key may be a retry of
    one already admitted: only admit.lua, which answers replays first, may answer it (never a
    memory short-cut)."""
    key = idempotency_key_of(idempotency_key_header)
    limiter = resources.limiter
    plan = limiter.plan("buy", client)
    if key is None:
        if plan and (cached := limiter.cached_denial(plan)):
            raise RateLimited(cached)
        if resources.sold_out.is_sold_out(product_id):
            raise SoldOut(product_id)
        if (opens_at_ms := resources.not_open.opens_at_ms(product_id)) is not None:
            raise SaleNotOpen(product_id, opens_at_ms)
    marks = resources.sold_out.mark(), resources.not_open.mark()
    if limiter.shares_main_redis or plan is None:
        # The limits (if any) are checked, and charged only on a yes, inside the admission call.
        admission = await _admit_once_rebuilding_the_gate(resources, client, product_id, quantity, key, plan)
    else:
        admission = await _admit_charged_on_the_limiter(resources, client, product_id, quantity, key, plan)
    if refusal := _refusal(admission, product_id, resources, marks):
        raise refusal
    return Accepted(admission.order_id, admission.decision is Decision.REPLAY, admission.verdict)

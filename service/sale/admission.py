"""``POST /buy``'s decision in one call of ``lua/admit.lua`` on the main Redis.

Rate limits (when their buckets share the main Redis), the Idempotency-Key, the stock gate
and the enqueue happen in one atomic step, and a "no" charges nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from db.orders import AdmittedOrder
from service.core.keys import (
    ADMITTED_KEY,
    drain_flag_key,
    drain_job_id,
    drain_job_key,
    gate_key,
    idempotency_record_key,
    pending_key,
    purchases_key,
    sale_key,
)
from service.core.tracing import record, trace_carrier, tracer, tracing_on
from service.limiter.identity import ClientIdentity
from service.limiter.ratelimit import Plan, Verdict
from service.sale.order_jobs import lane_of, order_entry
from service.sale.resources import Resources

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
"""How long an Idempotency-Key is remembered after its request was admitted."""
PURCHASES_TTL_SECONDS = 30 * 24 * 3600
"""How long a customer's admitted units count against a product's per-customer limit."""


class Decision(IntEnum):
    """``admit.lua``'s outcome codes."""

    LIMITED = 0
    ADMITTED = 1
    NOT_ENOUGH_STOCK = 2
    GATE_MISSING = 3
    REPLAY = 4
    KEY_REUSED = 5
    NOT_OPEN = 6
    CLOSED = 7
    CUSTOMER_LIMIT = 8


@dataclass(frozen=True, slots=True)
class Admission:
    decision: Decision
    order_id: str | None = None
    """The new order's id (admitted) or the first request's (replay, key reused)."""
    left: int = 0
    """Units left in the gate; for the sale outcomes, opens/closes (ms) or units still allowed."""
    verdict: Verdict | None = None
    """The rate-limit part, when the limits were checked in the same call."""
    now_us: int = 0
    """admit.lua's time of the decision (Redis's clock, or the app clock), µs since the epoch."""


def _customer_digest(client: ClientIdentity, extra: str = "") -> str:
    """The customer (its id when a trusted proxy gave one, else its IP), hashed."""
    scope = client.customer or client.ip
    return hashlib.sha256(f"{scope}\0{extra}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def request_fingerprint(product_id: int, quantity: int) -> str:
    return f"{product_id}:{quantity}"


async def admit(
    resources: Resources,
    client: ClientIdentity,
    plan: Plan | None,
    product_id: int,
    quantity: int,
    idempotency_key: str | None,
) -> Admission:
    """Run admit.lua once; ``plan`` holds the buckets to check in the same call (or None).

    The call is one span; the order's pending entry carries its context (``traceparent``), so
    the worker's span for the order joins the same trace."""
    order = AdmittedOrder(uuid.uuid4(), product_id, quantity, client.ip, datetime.now(UTC))
    if not tracing_on():  # no span machinery on the hot path when nothing records it
        return await _run_admit_script(resources, client, plan, order, idempotency_key)
    with tracer.start_as_current_span("flashsale.admit") as span:
        admission = await _run_admit_script(resources, client, plan, order, idempotency_key)
        record(
            span,
            decision=admission.decision.name.lower(),
            order_id=admission.order_id,
            product_id=product_id,
            quantity=quantity,
            units_left=admission.left if admission.decision is Decision.ADMITTED else None,
        )
        return admission


async def _run_admit_script(
    resources: Resources,
    client: ClientIdentity,
    plan: Plan | None,
    order: AdmittedOrder,
    idempotency_key: str | None,
) -> Admission:
    product_id, quantity = order.product_id, order.quantity
    order_id = str(order.order_id)
    lane = lane_of(order_id, resources.settings.drain_lanes)
    traceparent = trace_carrier().get("traceparent") if tracing_on() else None
    keys = [
        gate_key(product_id),
        idempotency_record_key(_customer_digest(client, idempotency_key or "")),
        drain_job_key(product_id, order_id, lane),
        resources.queue.key,
        sale_key(product_id),
        purchases_key(product_id, _customer_digest(client)),
        ADMITTED_KEY,
        pending_key(product_id, lane),
        drain_flag_key(product_id, lane),
        *(plan.keys if plan else ()),
    ]
    clock, *limit_args = resources.limiter.arguments(plan)
    args = [
        clock,
        quantity,
        order_id,
        drain_job_id(product_id, order_id, lane),
        request_fingerprint(product_id, quantity) if idempotency_key else "",
        IDEMPOTENCY_TTL_SECONDS,
        PURCHASES_TTL_SECONDS,
        len(plan.keys) if plan else 0,
        *limit_args,
        order_entry(order, traceparent),
        *resources.job_fields.for_lane(product_id, lane, order.admitted_at),
    ]
    reply = await resources.admit_script(keys=keys, args=args, tail=resources.job_fields.constant)
    decision, now_us = Decision(int(reply[0])), int(reply[1])
    verdict = None
    if plan is not None:  # every reply reports the buckets, a replay's too
        verdict = resources.limiter.conclude(plan, decision is not Decision.LIMITED, reply[3:])
    if decision in (Decision.REPLAY, Decision.KEY_REUSED):
        return Admission(decision, order_id=str(reply[2]), verdict=verdict, now_us=now_us)
    if decision is Decision.ADMITTED:
        return Admission(decision, order_id=order_id, left=int(reply[2]), verdict=verdict, now_us=now_us)
    return Admission(decision, left=int(reply[2]), verdict=verdict, now_us=now_us)

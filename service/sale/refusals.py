"""What ``POST /buy`` refuses, in the sale's terms (``service.api.problems`` renders each one).

Each carries the facts its answer states and, when the rate limits were checked in the same
call, their ``verdict``. A rate limit or a limiter that cannot decide is the limiter's
refusal (``service.limiter.refusals``).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.refusals import Refusal
from service.limiter.ratelimit import Verdict


@dataclass(eq=False)
class InvalidIdempotencyKey(Refusal):
    """The Idempotency-Key header is empty, too long or not printable ASCII."""


@dataclass(eq=False)
class UnknownProduct(Refusal):
    product_id: int


@dataclass(eq=False)
class SoldOut(Refusal):
    product_id: int
    verdict: Verdict | None = None


@dataclass(eq=False)
class InsufficientStock(Refusal):
    """Fewer units left than asked for (but some)."""

    product_id: int
    available: int
    verdict: Verdict | None = None


@dataclass(eq=False)
class SaleNotOpen(Refusal):
    product_id: int
    opens_at_ms: int
    verdict: Verdict | None = None


@dataclass(eq=False)
class SaleClosed(Refusal):
    product_id: int
    closed_at_ms: int
    verdict: Verdict | None = None


@dataclass(eq=False)
class PurchaseLimit(Refusal):
    """The customer's units would exceed the product's per-customer limit."""

    product_id: int
    remaining: int
    """Units this customer may still buy."""
    verdict: Verdict | None = None


@dataclass(eq=False)
class IdempotencyKeyReused(Refusal):
    """The key was used before, from this client, for a different request."""

    order_id: str
    """The first request's order."""
    verdict: Verdict | None = None

"""Request and response bodies of the HTTP API (msgspec Structs, never table models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

MAX_BODY_BYTES = 16 * 1024
"""A /buy body is a few dozen bytes; anything near this is not a purchase."""
MAX_QUANTITY = 100
"""More than this in one order is a client bug, not a purchase."""
MAX_ID = 2**31 - 1

ProductId = Annotated[int, Meta(ge=1, le=MAX_ID, description="Product to buy")]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QUANTITY, description="Units in this order")]


class BuyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``{}`` buys one unit of product 1 (the seed's demo product)."""

    product_id: ProductId = 1
    quantity: Quantity = 1


class BuyAccepted(msgspec.Struct):
    order_id: uuid.UUID
    status_url: str
    status: str = "queued"


class OrderView(msgspec.Struct, omit_defaults=True):
    order_id: uuid.UUID
    status: str
    """``queued`` | ``confirmed`` | ``rejected``"""
    reason: str | None = None
    """Why a rejected order was rejected: ``sold_out``, ``unknown_product``, ``failed``."""


class ProductView(msgspec.Struct):
    id: int
    name: str
    price: str
    """Decimal as text ("999.99"), so no client rounds money through a float."""
    stock: int
    """Units left in PostgreSQL (confirmed orders already taken)."""
    available: int
    """Units not yet promised to an admitted order (the stock gate)."""
    sold_out: bool
    sale: str
    """``upcoming`` | ``open`` | ``sold_out`` | ``closed``"""
    sale_opens_at: datetime | None = None
    sale_closes_at: datetime | None = None
    per_customer_limit: int | None = None


class BucketState(msgspec.Struct):
    name: str
    key: str
    """What the limit counts: ``ip``, ``customer``, ``api_key``, ``global`` or ``header:<name>``."""
    mode: str
    """``enforce`` or ``shadow``."""
    capacity: int
    """As this client gets it (an override applied)."""
    refill_per_sec: float
    tokens: int
    """Whole tokens in the bucket now, refilled to now."""
    seconds_to_full: float


class ClientLimitsView(msgspec.Struct):
    route: str
    client: str
    allow_listed: bool
    """On the route's allow list: never limited (no buckets)."""
    limits: list[BucketState]

"""Tables: products (stock guarded by a version column) and orders (one row per decided order)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, DateTime, Numeric, func
from sqlmodel import Field, SQLModel


class OrderStatus(StrEnum):
    QUEUED = "queued"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    SOLD_OUT = "sold_out"
    UNKNOWN_PRODUCT = "unknown_product"
    FAILED = "failed"


class Product(SQLModel, table=True):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("stock >= 0", name="stock_not_negative"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    price: Decimal = Field(sa_column=Column(Numeric(10, 2), nullable=False))
    stock: int
    version: int = Field(default=0)
    """Bumped by every stock change; an update that saw an older version changes nothing."""
    sale_opens_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    """Before this, /buy answers that the sale has not opened (None: open already)."""
    sale_closes_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    per_customer_limit: int | None = None
    """Most units one customer (or, without a customer id, one IP) may be admitted for."""


class Order(SQLModel, table=True):
    __tablename__ = "orders"

    id: uuid.UUID = Field(primary_key=True)
    """The order id the API answered 202 with: one row per id, ever."""
    product_id: int = Field(index=True)
    """No foreign key: an order keeps its history even if its product is later removed."""
    client_id: str = Field(max_length=255)
    quantity: int
    status: str = Field(max_length=16)
    """An :class:`OrderStatus` value (kept as text so adding a status needs no type migration)."""
    reason: str | None = Field(default=None, max_length=64)
    admitted_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    decided_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
    )

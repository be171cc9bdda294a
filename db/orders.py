"""Apply one admitted order to PostgreSQL: optimistic lock on the product's version column."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from db.models import Order, OrderStatus, Product, RejectReason

BACKOFF_BASE_SECONDS = 0.001
BACKOFF_CAP_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class AdmittedOrder:
    """What the API promised: the job's payload."""

    order_id: uuid.UUID
    product_id: int
    quantity: int
    client_id: str
    admitted_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    reason: str | None
    conflicts: int
    """Optimistic-lock updates that lost to another writer and were retried."""
    applied_now: bool
    """False when an earlier run of the same order had already decided it."""


def backoff_seconds(conflicts: int) -> float:
    """Full-jitter exponential backoff, so colliding workers spread out instead of re-colliding."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(conflicts, 16)))


def apply_order(engine: Engine, order: AdmittedOrder, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Confirm or reject ``order`` exactly once.

    Read stock and version, then ``UPDATE … WHERE id = … AND version = <seen>``; zero rows
    means another worker changed the product first, so re-read and retry after a jittered
    backoff until the update lands or the stock is gone. The order row is written in the
    same transaction as the stock change, and its primary key is the order id, so a job
    that runs twice finds the first run's row instead of buying twice.
    """
    conflicts = 0
    while True:
        with Session(engine) as session:
            decided = session.get(Order, order.order_id)
            if decided is not None:
                return Outcome(decided.status, decided.reason, conflicts, applied_now=False)
            row = session.exec(
                select(Product.stock, Product.version).where(Product.id == order.product_id)
            ).first()
            if row is None:
                status, reason = OrderStatus.REJECTED, RejectReason.UNKNOWN_PRODUCT
            elif row.stock < order.quantity:
                status, reason = OrderStatus.REJECTED, RejectReason.SOLD_OUT
            else:
                status, reason = OrderStatus.CONFIRMED, None
                changed = session.execute(
                    update(Product)
                    .where(Product.id == order.product_id, Product.version == row.version)
                    .values(stock=Product.stock - order.quantity, version=Product.version + 1)
                ).rowcount
                if changed != 1:
                    session.rollback()
                    conflicts += 1
                    sleep(backoff_seconds(conflicts))
                    continue
            session.add(_order_row(order, status, reason))
            try:
                session.commit()
            except IntegrityError:
                # Another run of this order committed first; the next pass reads its row.
                session.rollback()
                continue
            return Outcome(status, reason, conflicts, applied_now=True)


def record_failure(engine: Engine, order: AdmittedOrder) -> Outcome:
    """Reject an order whose job gave up, unless a run already decided it."""
    with Session(engine) as session:
        decided = session.get(Order, order.order_id)
        if decided is not None:
            return Outcome(decided.status, decided.reason, 0, applied_now=False)
        session.add(_order_row(order, OrderStatus.REJECTED, RejectReason.FAILED))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            decided = session.get(Order, order.order_id)
            return Outcome(decided.status, decided.reason, 0, applied_now=False)
    return Outcome(OrderStatus.REJECTED, RejectReason.FAILED, 0, applied_now=True)


def _order_row(order: AdmittedOrder, status: str, reason: str | None) -> Order:
    return Order(
        id=order.order_id,
        product_id=order.product_id,
        client_id=order.client_id,
        quantity=order.quantity,
        status=status,
        reason=reason,
        admitted_at=order.admitted_at,
    )


def find_order(engine: Engine, order_id: uuid.UUID) -> Order | None:
    with Session(engine) as session:
        return session.get(Order, order_id)


def find_product(engine: Engine, product_id: int) -> Product | None:
    with Session(engine) as session:
        return session.get(Product, product_id)

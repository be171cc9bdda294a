"""Apply one admitted order to PostgreSQL: optimistic lock on the product's version column."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, update
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
    """Confirm or reject ``order`` exactly once (a batch of one)."""
    return apply_orders(engine, [order], sleep)[order.order_id]


def apply_orders(
    engine: Engine, orders: list[AdmittedOrder], sleep: Callable[[float], None] = time.sleep
) -> dict[uuid.UUID, Outcome]:
    """Confirm or reject orders of one product, each exactly once, in one transaction.

    Read stock and version, give units to the undecided orders first come first served, then
    ``UPDATE … SET stock = stock - <units given> WHERE id = … AND version = <seen>`` and write
    every order row in the same transaction. Zero rows updated means another worker changed
    the product first: re-read and retry after a jittered backoff. Order ids are primary
    keys, so an order decided by another run is found, never bought twice. One version-checked
    update for many orders is what lets confirmations on a hot product scale.
    """
    conflicts = 0
    while True:
        with Session(engine) as session:
            decided = {
                row.id: Outcome(row.status, row.reason, conflicts, applied_now=False)
                for row in session.exec(select(Order).where(Order.id.in_([o.order_id for o in orders])))
            }
            todo = sorted((o for o in orders if o.order_id not in decided), key=lambda o: o.admitted_at)
            if not todo:
                return decided
            row = session.exec(
                select(Product.stock, Product.version).where(Product.id == todo[0].product_id)
            ).first()
            verdicts, left = [], row.stock if row else 0
            for order in todo:
                if row is None:
                    verdicts.append((order, OrderStatus.REJECTED, RejectReason.UNKNOWN_PRODUCT))
                elif order.quantity <= left:
                    left -= order.quantity
                    verdicts.append((order, OrderStatus.CONFIRMED, None))
                else:
                    verdicts.append((order, OrderStatus.REJECTED, RejectReason.SOLD_OUT))
            if row is not None and left != row.stock:
                changed = session.execute(
                    update(Product)
                    .where(Product.id == todo[0].product_id, Product.version == row.version)
                    .values(stock=Product.stock - (row.stock - left), version=Product.version + 1)
                ).rowcount
                if changed != 1:
                    session.rollback()
                    conflicts += 1
                    sleep(backoff_seconds(conflicts))
                    continue
            try:
                # One multi-row INSERT: the product row stays locked by the UPDATE until the commit.
                session.execute(insert(Order), [_order_values(o, st, rs) for o, st, rs in verdicts])
                session.commit()
            except IntegrityError:
                # Another run decided one of these first; the next pass reads its row.
                session.rollback()
                continue
            applied = {o.order_id: Outcome(st, rs, conflicts, applied_now=True) for o, st, rs in verdicts}
            return decided | applied


def record_failure(engine: Engine, order: AdmittedOrder) -> Outcome:
    """Reject an order whose job gave up, unless a run already decided it."""
    with Session(engine) as session:
        decided = session.get(Order, order.order_id)
        if decided is not None:
            return Outcome(decided.status, decided.reason, 0, applied_now=False)
        session.add(Order(**_order_values(order, OrderStatus.REJECTED, RejectReason.FAILED)))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            decided = session.get(Order, order.order_id)
            return Outcome(decided.status, decided.reason, 0, applied_now=False)
    return Outcome(OrderStatus.REJECTED, RejectReason.FAILED, 0, applied_now=True)


def _order_values(order: AdmittedOrder, status: str, reason: str | None) -> dict:
    return {
        "id": order.order_id,
        "product_id": order.product_id,
        "client_id": order.client_id,
        "quantity": order.quantity,
        "status": status,
        "reason": reason,
        "admitted_at": order.admitted_at,
    }


def find_order(engine: Engine, order_id: uuid.UUID) -> Order | None:
    with Session(engine) as session:
        return session.get(Order, order_id)


def find_product(engine: Engine, product_id: int) -> Product | None:
    with Session(engine) as session:
        return session.get(Product, product_id)

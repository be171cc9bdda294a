"""Apply one admitted order to PostgreSQL: optimistic lock on the product's version column."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, any_, bindparam, text, update
from sqlalchemy.dialects import postgresql
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

    Read stock and version, give units to the undecided orders first come first served, write
    every order row, then ``UPDATE … SET stock = stock - <units given> WHERE id = … AND
    version = <seen>``. Zero rows updated means another worker changed the product first:
    read it again; while the new stock gives every order the same answer, the rows stand and
    only the update is tried again with the new version; otherwise start over after a jittered
    backoff. Order ids are primary keys, so an order decided by another run is found, never
    bought twice. The rows go in before the update so that the product's row is locked only
    from the update to the commit: batches of one hot product write their rows side by side.
    """
    conflicts = 0
    while True:
        with Session(engine) as session:
            decided = _decided(session, [o.order_id for o in orders], conflicts)
            # A total order: batches that overlap write their shared rows in one order (no deadlock).
            todo = sorted(
                (o for o in orders if o.order_id not in decided), key=lambda o: (o.admitted_at, o.order_id)
            )
            if not todo:
                return decided
            product_id = todo[0].product_id
            row = _stock_and_version(session, product_id)
            verdicts = _verdicts(todo, row)
            written = _write_rows(session, verdicts)
            if len(written) < len(todo):  # another run decided some of these meanwhile: theirs stand
                decided |= _decided(
                    session, [o.order_id for o in todo if o.order_id not in written], conflicts
                )
                todo = [o for o in todo if o.order_id in written]
                verdicts = [verdict for verdict in verdicts if verdict[0].order_id in written]
            while _verdicts(todo, row) == verdicts:
                if _take_stock(session, product_id, row, verdicts):
                    session.commit()
                    applied = {
                        o.order_id: Outcome(st, rs, conflicts, applied_now=True) for o, st, rs in verdicts
                    }
                    return decided | applied
                conflicts += 1
                row = _stock_and_version(session, product_id)
            session.rollback()  # the stock no longer gives these answers: decide again
            sleep(backoff_seconds(conflicts))


ORDER_IDS = postgresql.ARRAY(postgresql.UUID(as_uuid=True))
DECIDED_AMONG = select(Order.id, Order.status, Order.reason).where(
    Order.id == any_(bindparam("ids", type_=ORDER_IDS))
)
"""Core, one array parameter: no ORM objects, and the statement is the same for any batch size."""


def _decided(session: Session, order_ids: list[uuid.UUID], conflicts: int) -> dict[uuid.UUID, Outcome]:
    """The outcomes of those of ``order_ids`` some run has already decided."""
    rows = session.connection().execute(DECIDED_AMONG, {"ids": order_ids})
    return {row.id: Outcome(row.status, row.reason, conflicts, applied_now=False) for row in rows}


WRITE_NEW_ORDERS = (
    text(
        "INSERT INTO orders (id, product_id, client_id, quantity, status, reason, admitted_at)"
        " SELECT * FROM unnest(CAST(:id AS uuid[]), CAST(:product_id AS integer[]),"
        " CAST(:client_id AS varchar[]), CAST(:quantity AS integer[]), CAST(:status AS varchar[]),"
        " CAST(:reason AS varchar[]), CAST(:admitted_at AS timestamptz[]))"
        " ON CONFLICT (id) DO NOTHING RETURNING id"
    )
    .bindparams(bindparam("id", type_=ORDER_IDS))
    .columns(id=postgresql.UUID(as_uuid=True))
)
"""A batch's rows as one array per column: one short statement for any batch size, where a
multi-row VALUES has seven parameters a row for the driver to render and the server to parse."""


def _write_rows(session: Session, verdicts: list) -> set[uuid.UUID]:
    """One INSERT; returns the ids written. A row another run wrote first is skipped (after
    waiting for that run's commit), not an error that would undo the whole batch."""
    if not verdicts:
        return set()
    rows = [_order_values(o, st, rs) for o, st, rs in verdicts]
    columns = {name: [row[name] for row in rows] for name in rows[0]}  # one array per column
    return set(session.connection().execute(WRITE_NEW_ORDERS, columns).scalars())


def _stock_and_version(session: Session, product_id: int):
    """The product's (stock, version) as last committed, or None for an unknown product."""
    return session.exec(select(Product.stock, Product.version).where(Product.id == product_id)).first()


def _verdicts(todo: list[AdmittedOrder], row) -> list[tuple[AdmittedOrder, str, str | None]]:
    """First come first served from the stock in ``row``."""
    verdicts, left = [], row.stock if row else 0
    for order in todo:
        if row is None:
            verdicts.append((order, OrderStatus.REJECTED, RejectReason.UNKNOWN_PRODUCT))
        elif order.quantity <= left:
            left -= order.quantity
            verdicts.append((order, OrderStatus.CONFIRMED, None))
        else:
            verdicts.append((order, OrderStatus.REJECTED, RejectReason.SOLD_OUT))
    return verdicts


def _take_stock(session: Session, product_id: int, row, verdicts: list) -> bool:
    """The version-checked update for the confirmed units; False when another writer changed
    the product since ``row`` was read. Nothing to take (no units given) needs no update."""
    units = sum(order.quantity for order, status, _ in verdicts if status == OrderStatus.CONFIRMED)
    if row is None or units == 0:
        return True
    changed = session.execute(
        update(Product)
        .where(Product.id == product_id, Product.version == row.version)
        .values(stock=Product.stock - units, version=Product.version + 1)
    ).rowcount
    return changed == 1


def record_failure(engine: Engine, order: AdmittedOrder) -> Outcome:
    """Reject an order as failed, unless a run already decided it (a batch of one)."""
    return record_failures(engine, [order])[order.order_id]


def record_failures(engine: Engine, orders: list[AdmittedOrder]) -> dict[uuid.UUID, Outcome]:
    """Reject, as failed, the orders of a draining job that gave up, in one transaction; an
    order some run already decided keeps its decision (``applied_now`` False)."""
    with Session(engine) as session:
        decided = _decided(session, [o.order_id for o in orders], 0)
        todo = [o for o in orders if o.order_id not in decided]
        written = _write_rows(session, [(o, OrderStatus.REJECTED, RejectReason.FAILED) for o in todo])
        if len(written) < len(todo):  # decided by another run meanwhile: theirs stand
            decided |= _decided(session, [o.order_id for o in todo if o.order_id not in written], 0)
        session.commit()
    failed = Outcome(OrderStatus.REJECTED, RejectReason.FAILED, 0, applied_now=True)
    return decided | {order_id: failed for order_id in written}


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

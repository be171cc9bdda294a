"""Apply one admitted order to PostgreSQL: optimistic lock on the product's version column."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text, update
from sqlmodel import Session, select

from db.models import Order, OrderStatus, Product, RejectReason

BACKOFF_BASE_SECONDS = 0.001
BACKOFF_CAP_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class AdmittedOrder:
    """What the API promised: the job's payload."""

    order_id: uuid.UUID | str
    """A UUID, or its text as the pending entry holds it (the drain never parses it: the
    database casts the text, and outcomes are keyed by whichever the caller gave)."""
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
) -> dict[uuid.UUID | str, Outcome]:
    """Confirm or reject orders of one product, each exactly once, in one transaction.

    Read stock and version, give units to the undecided orders first come first served, write
    every order row, then ``UPDATE … SET stock = stock - <units given> WHERE id = … AND
    version = <seen>``. Zero rows updated means another worker changed the product first:
    read it again; while the new stock gives every order the same answer, the rows stand and
    only the update is tried again with the new version; otherwise start over after a jittered
    backoff. Order ids are primary keys, so an order decided by another run is found (its row
    is not written again; its decision is read back), never bought twice: a batch costs no
    separate look-up of decided orders, which are rare (a run that died after its commit).
    The rows go in before the update so that the product's row is locked only from the update
    to the commit: batches of one hot product write their rows side by side.
    """
    conflicts = 0
    decided: dict[uuid.UUID | str, Outcome] = {}
    while True:
        with Session(engine) as session:
            # A total order: batches that overlap write their shared rows in one order (no deadlock).
            todo = sorted(
                (o for o in orders if o.order_id not in decided),
                key=lambda o: (o.admitted_at, str(o.order_id)),
            )
            if not todo:
                return decided
            product_id = todo[0].product_id
            row = _stock_and_version(session, product_id)
            verdicts = _verdicts(todo, row)
            written = _write_rows(session, verdicts)
            if len(written) < len(todo):  # another run decided some, before or meanwhile: theirs stand
                decided |= _decided(session, [o for o in todo if str(o.order_id) not in written], conflicts)
                todo = [o for o in todo if str(o.order_id) in written]
                verdicts = [verdict for verdict in verdicts if str(verdict[0].order_id) in written]
            while _verdicts(todo, row) == verdicts:
                if _take_stock(session, product_id, row, verdicts):
                    session.commit()
                    return decided | _applied(verdicts, conflicts)
                conflicts += 1
                row = _stock_and_version(session, product_id)
            session.rollback()  # the stock no longer gives these answers: decide again
            sleep(backoff_seconds(conflicts))


def _applied(verdicts: list, conflicts: int) -> dict[uuid.UUID | str, Outcome]:
    """The outcomes of a committed batch: one (frozen) Outcome per kind of verdict, shared."""
    kinds: dict[tuple[str, str | None], Outcome] = {}
    return {
        order.order_id: kinds.get((status, reason))
        or kinds.setdefault((status, reason), Outcome(status, reason, conflicts, applied_now=True))
        for order, status, reason in verdicts
    }


DECIDED_AMONG = text(
    "SELECT CAST(id AS text) AS id, status, reason FROM orders WHERE id = ANY(CAST(:ids AS uuid[]))"
)
"""One array parameter, ids as text: no ORM objects, no UUID objects, and the statement is the
same for any batch size."""


def _decided(session: Session, orders: list[AdmittedOrder], conflicts: int) -> dict[uuid.UUID | str, Outcome]:
    """The outcomes of those of ``orders`` some run has already decided."""
    rows = session.connection().execute(DECIDED_AMONG, {"ids": [str(o.order_id) for o in orders]})
    found = {
        order_id: Outcome(status, reason, conflicts, applied_now=False) for order_id, status, reason in rows
    }
    return {o.order_id: found[str(o.order_id)] for o in orders if str(o.order_id) in found}


WRITE_NEW_ORDERS = text(
    "INSERT INTO orders (id, product_id, client_id, quantity, status, reason, admitted_at)"
    " SELECT * FROM unnest(CAST(:id AS uuid[]), CAST(:product_id AS integer[]),"
    " CAST(:client_id AS varchar[]), CAST(:quantity AS integer[]), CAST(:status AS varchar[]),"
    " CAST(:reason AS varchar[]), CAST(:admitted_at AS timestamptz[]))"
    " ON CONFLICT (id) DO NOTHING RETURNING CAST(id AS text)"
)
"""A batch's rows as one array per column: one short statement for any batch size, where a
multi-row VALUES has seven parameters a row for the driver to render and the server to parse."""


def _write_rows(session: Session, verdicts: list) -> set[str]:
    """One INSERT; returns the ids written, as text. A row another run wrote first is skipped
    (after waiting for that run's commit), not an error that would undo the whole batch."""
    if not verdicts:
        return set()
    columns = {
        "id": [str(order.order_id) for order, _, _ in verdicts],
        "product_id": [order.product_id for order, _, _ in verdicts],
        "client_id": [order.client_id for order, _, _ in verdicts],
        "quantity": [order.quantity for order, _, _ in verdicts],
        "status": [str(status) for _, status, _ in verdicts],
        "reason": [None if reason is None else str(reason) for _, _, reason in verdicts],
        "admitted_at": [order.admitted_at for order, _, _ in verdicts],
    }
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


def record_failures(engine: Engine, orders: list[AdmittedOrder]) -> dict[uuid.UUID | str, Outcome]:
    """Reject, as failed, the orders of a draining job that gave up, in one transaction; an
    order some run already decided keeps its decision (``applied_now`` False)."""
    with Session(engine) as session:
        written = _write_rows(session, [(o, OrderStatus.REJECTED, RejectReason.FAILED) for o in orders])
        unwritten = [o for o in orders if str(o.order_id) not in written]
        decided = _decided(session, unwritten, 0) if unwritten else {}  # decided by another run: theirs stand
        session.commit()
    failed = Outcome(OrderStatus.REJECTED, RejectReason.FAILED, 0, applied_now=True)
    return decided | {o.order_id: failed for o in orders if str(o.order_id) in written}


def find_order(engine: Engine, order_id: uuid.UUID) -> Order | None:
    with Session(engine) as session:
        return session.get(Order, order_id)


def find_product(engine: Engine, product_id: int) -> Product | None:
    with Session(engine) as session:
        return session.get(Product, product_id)

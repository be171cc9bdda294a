"""Bring each stock gate back to what the database and the admitted-order record say it must be.

    gate = database stock - units held by admitted orders

An order holds its units from its admission until its decision has put them where they
belong: in the database's stock count (confirmed), nowhere (rejected as sold out: the gate
had promised units the database did not have), or back in the gate (rejected as failed).
One of its product's pending lists (its lane) holds its entry (product, quantity) until that
moment, whatever its draining job is doing (queued, popped, running, waiting for a retry,
dead-lettered, or gone), so the count comes from the pending lists, never from RQ's; ``fs:admitted`` (the
same orders by id) tells whether an entry is missing.

Drift comes from a gate rebuilt while orders were in flight, orders the database rejected as
sold out although the gate had admitted them, or a Redis that lost writes in a crash. A pass
never sets a gate above the truth:

- the gate is WATCHed before anything is read, and every admission, and every return of a
  failed order's units, moves the gate: one that happens during the pass voids it (a sale in
  full swing is left alone for that pass);
- the pending lists and ``fs:admitted`` are read (in one MULTI) before the database, and an
  order leaves them only after its row is committed, so an order decided in between is
  counted as held and in the stock: low;
- the order rows are read before the stock, so an order confirmed in between is held and
  taken from the stock: low;
- a failed order's units go back to the gate in the same step that takes it off
  ``fs:admitted`` (worker/jobs.py), so until then they are held.

A repair can make the sale stop early for one pass, never admit what PostgreSQL cannot confirm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import WatchError
from sqlalchemy import Engine
from sqlmodel import Session, select

from db.models import OrderStatus, Product, RejectReason
from db.orders import DECIDED_AMONG
from service.core.keys import ADMITTED_KEY, GATE_CHANNEL, gate_key, pending_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Repair:
    product_id: int
    gate_before: int | None
    gate_after: int


@dataclass(frozen=True, slots=True)
class Admitted:
    """The undecided orders, read from the pending lists, and ``fs:admitted`` to check them."""

    orders: dict[str, tuple[int, int]]
    """order id -> (product id, quantity), from the pending entries."""
    unreadable: int
    """Admitted orders whose pending entry is gone: their product and units are unknown."""

    def of_product(self, product_id: int) -> dict[str, int]:
        return {
            order_id: units for order_id, (product, units) in self.orders.items() if product == product_id
        }


def _admitted_orders(redis: Redis, product_ids: list[int]) -> Admitted:
    """The pending entries of every lane of every product, and ``fs:admitted``, in one MULTI
    (one instant)."""
    lists = [(product_id, key) for product_id in product_ids for key in pending_keys(product_id)]
    with redis.pipeline(transaction=True) as pipe:
        pipe.zrange(ADMITTED_KEY, 0, -1)
        for _, key in lists:
            pipe.lrange(key, 0, -1)
        admitted, *entry_lists = pipe.execute()
    orders = {}
    for (product_id, _), entries in zip(lists, entry_lists, strict=True):
        for raw in entries:
            order_id, quantity, _ = raw.split(b" ", 2)  # an entry: id, quantity, then the rest
            orders[order_id.decode()] = (product_id, int(quantity))
    unreadable = sum(1 for member in admitted if member.decode() not in orders)
    return Admitted(orders, unreadable)


def _held_units(session: Session, held: dict[str, int]) -> int:
    """Units of these admitted orders (order id -> units) that are neither in the database's
    stock count nor back in the gate."""
    if held:
        for row in session.connection().execute(DECIDED_AMONG, {"ids": list(held)}):
            # A failed order's units go back to the gate after its row is written: held till then.
            if not (row.status == OrderStatus.REJECTED and row.reason == RejectReason.FAILED):
                del held[row.id]  # confirmed: in the stock count already; sold out: never had units
    return sum(held.values())


def _available_units(engine: Engine, product_id: int, admitted: Admitted) -> int:
    """The product's database stock minus the units its admitted orders hold."""
    with Session(engine) as session:
        held = _held_units(session, admitted.of_product(product_id))  # before the stock: see above
        stock = session.exec(select(Product.stock).where(Product.id == product_id)).first() or 0
    return stock - held


def _stocks(engine: Engine) -> dict[int, int]:
    with Session(engine) as session:
        return dict(session.exec(select(Product.id, Product.stock)).all())


def reconcile_product(redis: Redis, engine: Engine, product_id: int) -> Repair | None:
    """Set one gate to stock minus held units; None when it was right (or moved meanwhile)."""
    with redis.pipeline() as pipe:
        try:
            pipe.watch(gate_key(product_id))
            before = pipe.get(gate_key(product_id))
            before = None if before is None else int(before)
            admitted = _admitted_orders(redis, list(_stocks(engine)))
            target = max(0, _available_units(engine, product_id, admitted))
            if before == target:
                return None
            if admitted.unreadable and before is not None and target > before:
                log.error(
                    "admitted orders without a pending entry: the gate is not raised",
                    extra={"product_id": product_id, "orders": admitted.unreadable},
                )
                return None
            pipe.multi()
            pipe.set(gate_key(product_id), target)
            pipe.publish(GATE_CHANNEL, product_id)
            pipe.execute()
        except WatchError:
            log.info("gate moved while reconciling; next pass", extra={"product_id": product_id})
            return None
    return Repair(product_id, before, target)


def reconcile(redis: Redis, engine: Engine) -> list[Repair]:
    """One pass over every product; a gate that had to be repaired is logged (a warning: it
    drifted). The admin API sets gates the same way after a restock, which is no drift."""
    repairs = []
    for product_id in _stocks(engine):
        if repair := reconcile_product(redis, engine, product_id):
            log.warning(
                "stock gate repaired",
                extra={"product_id": product_id, "before": repair.gate_before, "after": repair.gate_after},
            )
            repairs.append(repair)
    return repairs

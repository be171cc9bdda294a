"""Bring each stock gate back to what the database and the queue say it must be.

    gate = database stock - units of admitted orders the database has not decided yet

Drift comes from a gate rebuilt while orders were in flight, orders the database rejected as
sold out although the gate had admitted them, or a Redis that lost writes in a crash. The
queue is read before the database, so an order confirmed in between is counted twice and the
gate comes out low, never high: a repair can make the sale stop early for one pass, never
admit what PostgreSQL cannot confirm. A gate that moves while it is being checked (a sale in
full swing) is left alone for that pass.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import WatchError
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import Engine
from sqlmodel import Session, select

from db.models import Order, Product
from service.stock_gate import GATE_CHANNEL, gate_key
from worker.queue import order_queue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Repair:
    product_id: int
    gate_before: int | None
    gate_after: int


def undecided_units(redis: Redis, engine: Engine) -> Counter:
    """Units per product promised to orders that are queued, running or waiting for a retry,
    and not yet decided in the database."""
    queue = order_queue(redis)
    job_ids = queue.get_job_ids()
    job_ids += StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
    job_ids += ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False)
    orders = {}
    for job in Job.fetch_many(list(dict.fromkeys(job_ids)), connection=redis, serializer=queue.serializer):
        if job is not None:
            order_id, product_id, quantity, *_ = job.args
            orders[uuid.UUID(order_id)] = (product_id, quantity)
    if not orders:
        return Counter()
    with Session(engine) as session:
        decided = set(session.exec(select(Order.id).where(Order.id.in_(list(orders)))))
    units = Counter()
    for order_id, (product_id, quantity) in orders.items():
        if order_id not in decided:
            units[product_id] += quantity
    return units


def _stocks(engine: Engine) -> dict[int, int]:
    with Session(engine) as session:
        return dict(session.exec(select(Product.id, Product.stock)).all())


def _stock(engine: Engine, product_id: int) -> int:
    with Session(engine) as session:
        return session.exec(select(Product.stock).where(Product.id == product_id)).first() or 0


def reconcile_product(redis: Redis, engine: Engine, product_id: int) -> Repair | None:
    """Set one gate to stock minus undecided units; None when it was right (or moved meanwhile)."""
    with redis.pipeline() as pipe:
        try:
            pipe.watch(gate_key(product_id))
            before = pipe.get(gate_key(product_id))
            undecided = undecided_units(redis, engine)[product_id]
            target = max(0, _stock(engine, product_id) - undecided)
            if before is not None and int(before) == target:
                return None
            pipe.multi()
            pipe.set(gate_key(product_id), target)
            pipe.publish(GATE_CHANNEL, product_id)
            pipe.execute()
        except WatchError:
            log.info("gate moved while reconciling; next pass", extra={"product_id": product_id})
            return None
    return Repair(product_id, None if before is None else int(before), target)


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

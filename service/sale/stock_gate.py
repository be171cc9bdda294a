"""The stock gate: units not yet promised, kept in Redis in front of PostgreSQL.

The gate only ever says "no" early; PostgreSQL decides every order. It can be rebuilt from
the database at any time (seed, restock, or a Redis that lost it). Whenever units come back,
a message on ``GATE_CHANNEL`` tells every API process to drop its sold-out latch.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from redis import Redis
from sqlalchemy import Engine

from db.models import Product
from db.seed import seed_demo_product
from service.core.keys import GATE_CHANNEL, gate_key, sale_key


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def publish_product(redis: Any, product: Product, gate_units: int | None) -> Any:
    """Put a product's sale rules (and gate, unless ``gate_units`` is None) in Redis and
    announce it (await the result on an asyncio client)."""
    sale = {"opens_ms": _ms(product.sale_opens_at), "closes_ms": _ms(product.sale_closes_at)}
    sale["per_customer"] = product.per_customer_limit or 0
    pipe = redis.pipeline(transaction=True)
    pipe.delete(sale_key(product.id))
    pipe.hset(sale_key(product.id), mapping={k: v for k, v in sale.items() if v is not None})
    if gate_units is not None:
        pipe.set(gate_key(product.id), max(0, gate_units))
    pipe.publish(GATE_CHANNEL, product.id)
    return pipe.execute()


def set_gate(redis: Any, product_id: int, units: int) -> Any:
    """Set the gate to ``units`` and announce it (sync and asyncio clients alike: await the
    result of an asyncio one)."""
    pipe = redis.pipeline(transaction=False)
    pipe.set(gate_key(product_id), units)
    pipe.publish(GATE_CHANNEL, product_id)
    return pipe.execute()


def add_to_gate(pipe: Any, product_id: int, quantity: int) -> None:
    """Queue on ``pipe`` units going back into the gate (an order that will never use them) and
    their announcement; the caller executes it together with what must happen in the same step."""
    pipe.incrby(gate_key(product_id), quantity)
    pipe.publish(GATE_CHANNEL, product_id)


def seed(engine: Engine, redis: Redis, stock: int | None = None) -> Product:
    """``flashsale seed``: the demo product in PostgreSQL (``db.seed``; ``stock`` resets its
    stock), then its gate and sale rules in Redis, rebuilt from the database."""
    product = seed_demo_product(engine, stock)
    publish_product(redis, product, product.stock)
    return product

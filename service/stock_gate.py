"""The stock gate: units not yet promised, kept in Redis in front of PostgreSQL.

The gate only ever says "no" early; PostgreSQL decides every order. It can be rebuilt from
the database at any time (seed, restock, or a Redis that lost it). Whenever units come back,
a message on ``GATE_CHANNEL`` tells every API process to drop its sold-out latch.
"""

from __future__ import annotations

from typing import Any

GATE_CHANNEL = "fs:gate"


def gate_key(product_id: int) -> str:
    return f"fs:{{p:{product_id}}}:stock"


def set_gate(redis: Any, product_id: int, units: int, only_if_missing: bool = False) -> Any:
    """Set the gate to ``units`` and announce it (sync and asyncio clients alike: await the
    result of an asyncio one)."""
    pipe = redis.pipeline(transaction=False)
    pipe.set(gate_key(product_id), units, nx=only_if_missing)
    pipe.publish(GATE_CHANNEL, product_id)
    return pipe.execute()


def release(redis: Any, product_id: int, quantity: int) -> Any:
    """Give back units an order reserved but will never use, and announce it."""
    pipe = redis.pipeline(transaction=False)
    pipe.incrby(gate_key(product_id), quantity)
    pipe.publish(GATE_CHANNEL, product_id)
    return pipe.execute()

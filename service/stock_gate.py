"""The stock gate: units not yet promised, kept in Redis in front of PostgreSQL.

The gate only ever says "no" early; PostgreSQL decides every order. It can be rebuilt from
the database at any time (seed, restock, or a Redis that lost it).
"""

from __future__ import annotations

from typing import Any


def gate_key(product_id: int) -> str:
    return f"fs:{{p:{product_id}}}:stock"


def set_gate(redis: Any, product_id: int, units: int, only_if_missing: bool = False) -> Any:
    """Set the gate to ``units`` (works with sync and asyncio clients alike)."""
    return redis.set(gate_key(product_id), units, nx=only_if_missing)


def release(redis: Any, product_id: int, quantity: int) -> Any:
    """Give back units an order reserved but will never use."""
    return redis.incrby(gate_key(product_id), quantity)

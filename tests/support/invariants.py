"""The sale's invariants, read back from PostgreSQL and Redis once every order is decided."""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis
from sqlalchemy import Engine

from service.core.keys import gate_key
from service.sale.reconcile import reconcile
from tests.support.database import order_rows, product_state


def assert_invariants(
    engine: Engine, redis: Redis, admitted: Iterable[str], stock_before: int, product_id: int = 1
) -> dict[str, tuple[str, str | None, int]]:
    """Every 202 has its row, confirmed or rejected with a reason; stock moved by exactly the
    confirmed units (none sold twice, none below zero, no oversell); the gate never promised
    more than the database holds, and agrees with it once reconciled. Returns the rows.

    Call it after the orders are terminal, for a run on one product."""
    rows = order_rows(engine)
    missing = set(admitted) - set(rows)
    assert not missing, f"{len(missing)} admitted orders have no row"
    unexplained = [
        row for row in rows.values() if row[0] != "confirmed" and not (row[0] == "rejected" and row[1])
    ]
    assert not unexplained, f"orders neither confirmed nor rejected with a reason: {unexplained[:5]}"
    confirmed_units = sum(quantity for status, _, quantity in rows.values() if status == "confirmed")
    stock, _ = product_state(engine, product_id)
    assert stock >= 0, "stock below zero"
    assert confirmed_units <= stock_before, "oversold"
    assert stock_before - stock == confirmed_units, "stock moved by other than the confirmed units"
    gate = int(redis.get(gate_key(product_id)))
    assert gate <= stock, f"the gate promises {gate} units, the database holds {stock}"
    reconcile(redis, engine)
    assert int(redis.get(gate_key(product_id))) == stock, "gate and database agree"
    return rows

"""Reading the truth back out of PostgreSQL."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, text


def product_state(engine: Engine, product_id: int = 1) -> tuple[int, int]:
    """(stock, version) of a product."""
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT stock, version FROM products WHERE id = :id"), {"id": product_id}
        ).one()
    return row.stock, row.version


def order_rows(engine: Engine) -> dict[str, tuple[str, str | None, int]]:
    """order id -> (status, reason, quantity) for every decided order."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, status, reason, quantity FROM orders")).all()
    return {str(row.id): (row.status, row.reason, row.quantity) for row in rows}


def status_counts(engine: Engine) -> Counter:
    return Counter((status, reason) for status, reason, _ in order_rows(engine).values())


def blocked_on_a_row_lock(engine: Engine) -> bool:
    """Whether a session of this database waits on a lock (a writer behind a rival's row lock)."""
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar()
        )

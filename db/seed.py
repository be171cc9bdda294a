"""``flashsale seed``'s database part: the demo product (id 1, "iPhone 15", 999.99, stock 100).

Its stock gate in Redis is the sale's (``service.sale.stock_gate.seed`` runs both).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session

from db.models import Product

DEMO_PRODUCT_ID = 1
DEMO_NAME = "iPhone 15"
DEMO_PRICE = Decimal("999.99")
DEMO_STOCK = 100


def seed_demo_product(engine: Engine, stock: int | None = None) -> Product:
    """Create the demo product if missing; with ``stock``, reset its stock to that number.

    Resetting bumps the version, so a worker holding the old version cannot write over it.
    """
    values = {
        "id": DEMO_PRODUCT_ID,
        "name": DEMO_NAME,
        "price": DEMO_PRICE,
        "stock": DEMO_STOCK,
        "version": 0,
    }
    statement = insert(Product).values(**values)
    if stock is None:
        statement = statement.on_conflict_do_nothing(index_elements=["id"])
    else:
        values["stock"] = stock
        statement = statement.values(stock=stock).on_conflict_do_update(
            index_elements=["id"],
            set_={"stock": stock, "version": Product.version + 1},
        )
    with Session(engine) as session:
        session.execute(statement)
        # Explicit ids leave the serial behind; keep it ahead so created products get fresh ids.
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products))")
        )
        session.commit()
        return session.get(Product, DEMO_PRODUCT_ID)

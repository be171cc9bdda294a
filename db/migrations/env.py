"""Alembic environment: online migrations only, serialised by a PostgreSQL advisory lock."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlmodel import SQLModel

from db import models  # noqa: F401  (registers the tables on the metadata)
from db.session import DEFAULT_DATABASE_URL, psycopg2_url

# Any fixed number: two `flashsale migrate` runs at once (two Helm hooks, two laptops) queue here.
MIGRATION_LOCK_ID = 7_414_001


def run_migrations_online() -> None:
    # `flashsale migrate` passes its URL; `alembic -c db/alembic.ini` reads the environment.
    url = context.config.attributes.get("database_url") or psycopg2_url(
        os.environ.get("FLASHSALE_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    )
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=SQLModel.metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


run_migrations_online()

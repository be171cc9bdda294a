"""The SQLAlchemy engine: one per process, built where it is used (never across a fork)."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlmodel import create_engine


def make_engine(database_url: str, pool_size: int = 5) -> Engine:
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def database_reachable(engine: Engine) -> bool:
    """``SELECT 1``: connectivity only, never the schema."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True

"""The SQLAlchemy engine: one per process, built where it is used (never across a fork)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import create_engine

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/flashsale"


def psycopg2_url(raw: str) -> str:
    """A PostgreSQL URL as SQLAlchemy's psycopg2 dialect takes it (``postgres://`` and
    ``postgresql://`` are rewritten); ValueError for anything else."""
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg2://" + raw.removeprefix("postgresql://")
    if not raw.startswith("postgresql+psycopg2://"):
        raise ValueError("must be a postgresql:// URL")
    return raw


def make_engine(database_url: str, pool_size: int = 5) -> Engine:
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )

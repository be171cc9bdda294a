"""The SQLAlchemy engine: one per process, built where it is used (never across a fork)."""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import create_engine

from service.logs import Throttled

UNREACHABLE_LOG = Throttled(logging.getLogger(__name__))


def make_engine(database_url: str, pool_size: int = 5) -> Engine:
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def database_problem(engine: Engine) -> str | None:
    """``SELECT 1`` (connectivity only, never the schema): None when it works, else why not,
    also logged. Only a server out of reach counts; any other error is a bug and raises."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
        # The driver's own words ("connection refused", "password authentication failed"),
        # without SQLAlchemy's statement and link; libpq never repeats a password in them.
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        UNREACHABLE_LOG.warning(
            type(exc).__name__, "database unreachable", error=type(exc).__name__, reason=reason
        )
        return reason
    return None

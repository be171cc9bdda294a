"""``flashsale migrate``: wait for PostgreSQL, create the database if missing, upgrade to head."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL did not answer within the wait, or refused our credentials."""


REFUSED_CREDENTIALS = ("password authentication failed", "no password supplied", "authentication failed")
"""libpq's words for a server that answered and said no: waiting longer will not change it."""


def wait_for_server(database_url: str, timeout: float = 60.0) -> None:
    """Block until the server accepts connections (to the maintenance database)."""
    admin_url = make_url(database_url).set(database="postgres")
    deadline = time.monotonic() + timeout
    engine = create_engine(admin_url, poolclass=pool.NullPool, connect_args={"connect_timeout": 3})
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                return
            except OperationalError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else ""
                if any(words in reason for words in REFUSED_CREDENTIALS):
                    host = make_url(database_url).host
                    raise DatabaseUnavailable(
                        f"PostgreSQL at {host} refused the credentials: {reason}"
                    ) from exc
                if time.monotonic() > deadline:
                    host = make_url(database_url).host
                    raise DatabaseUnavailable(
                        f"PostgreSQL at {host} did not answer in {timeout:.0f}s"
                    ) from exc
                log.info("waiting for PostgreSQL", extra={"host": make_url(database_url).host})
                time.sleep(1)
    finally:
        engine.dispose()


def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it does not exist yet; True when it was created."""
    url = make_url(database_url)
    engine = create_engine(
        url.set(database="postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            ).first()
            if exists:
                return False
            quoted = connection.dialect.identifier_preparer.quote(url.database)
            connection.execute(text(f"CREATE DATABASE {quoted}"))
            log.info("created database", extra={"database": url.database})
            return True
    finally:
        engine.dispose()


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def migrate(database_url: str, wait_seconds: float = 60.0) -> None:
    """Everything ``flashsale migrate`` does; safe to run again and from several places at once."""
    wait_for_server(database_url, wait_seconds)
    ensure_database(database_url)
    command.upgrade(alembic_config(database_url), "head")

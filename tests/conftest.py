"""Fixtures: a private redis-server and a private PostgreSQL database for the whole run.

Every test gets both emptied and the demo product re-seeded, so tests never see each
other's keys or rows, and the suite runs beside a ``make run`` on the same machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.engine import make_url

from db.migrate import DatabaseUnavailable, migrate, wait_for_server
from db.session import make_engine
from service.cli.dev_servers import postgres_server, redis_server
from service.core.settings import Settings, get_settings, settings_from_env
from service.sale.stock_gate import seed
from tests.support.system import System, process_env

POSTGRES_URL = os.environ.get(
    "FLASHSALE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server of our own on a free port (never the developer's Redis)."""
    with redis_server() as url:
        yield url


def _drop_database(url: str) -> None:
    admin = create_engine(
        make_url(url).set(database="postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database: on the local PostgreSQL if one answers, else on a throwaway server."""
    try:
        wait_for_server(POSTGRES_URL, timeout=3)
    except DatabaseUnavailable:
        with postgres_server() as url:
            migrate(url)
            yield url
        return
    url = (
        make_url(POSTGRES_URL)
        .set(database=f"flashsale_test_{uuid.uuid4().hex[:12]}")
        .render_as_string(hide_password=False)
    )
    migrate(url)
    try:
        yield url
    finally:
        _drop_database(url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def fresh_db(engine: Engine, redis: Redis) -> Engine:
    """No orders, no product but the demo one, back at stock 100, its stock gate rebuilt."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE orders, products RESTART IDENTITY"))
    seed(engine, redis, stock=100)
    return engine


@pytest.fixture
def settings_env(request, redis_url: str, database_url: str) -> dict[str, str]:
    """Environment for flashsale processes under test (see ``process_env``); a test marked
    ``drain_lanes(n)`` splits each product's orders over n lanes (the default's otherwise)."""
    env = process_env(redis_url, database_url)
    if lanes := request.node.get_closest_marker("drain_lanes"):
        env["FLASHSALE_DRAIN_LANES"] = str(lanes.args[0])
    return env


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return settings_from_env(settings_env)


@pytest.fixture
def system(settings_env: dict[str, str], fresh_db: Engine, tmp_path) -> Iterator[System]:
    """Start API replicas and workers with ``system.start_apis(n)`` / ``system.start_workers(m)``."""
    running = System(env=settings_env, log_dir=tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def worker_env(monkeypatch, settings_env):
    """Point this process's job code at the test servers (``worker_env(NAME=value)`` overrides)."""
    from worker import jobs

    def use(**overrides):
        for name, value in {**settings_env, **overrides}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        jobs.engine.cache_clear()
        jobs._redis.cache_clear()
        jobs._settle_script.cache_clear()

    yield use
    get_settings.cache_clear()
    jobs.engine.cache_clear()
    jobs._redis.cache_clear()
    jobs._settle_script.cache_clear()

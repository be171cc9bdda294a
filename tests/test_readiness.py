"""``/readyz`` is about the pod: ready while the main Redis answers, whatever PostgreSQL does.

Real API processes on a PostgreSQL and a Redis of the test's own, stopped under them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.engine import make_url

from db.migrate import migrate
from db.session import make_engine
from service.api.app import create_app
from service.api.routes import health
from service.cli.dev_servers import restartable_postgres, restartable_redis, wait_until
from service.core.settings import settings_from_env
from service.sale.stock_gate import seed
from tests.support.problems import assert_problem
from tests.support.system import System, process_env
from tests.support.tcp_proxy import tcp_proxy


def _log_lines(log_dir: Path, message: str) -> list[dict]:
    """The API processes' JSON log lines with this message."""
    lines = [line for log in log_dir.glob("api-*.log") for line in log.read_text().splitlines()]
    return [record for line in lines if (record := json.loads(line)).get("message") == message]


@pytest.fixture
def own_postgres(redis) -> Iterator:
    """A migrated PostgreSQL of this test's own, with the demo product, to stop under the API."""
    with restartable_postgres() as server:
        migrate(server.url)
        engine = make_engine(server.url, pool_size=1)
        seed(engine, redis)
        engine.dispose()
        yield server


@pytest.mark.slow
def test_a_pod_stays_ready_while_postgresql_is_away_and_says_why(own_postgres, redis_url, tmp_path):
    system = System(env=process_env(redis_url, own_postgres.url), log_dir=tmp_path)
    try:
        system.start_apis(1)
        with httpx.Client(base_url=system.url, timeout=10) as client:
            assert client.get("/readyz").json()["database"] == {"reachable": True, "error": None}
            own_postgres.stop()
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            database = ready.json()["database"]
            assert database["reachable"] is False and "Connection refused" in database["error"], database
            # What readiness promises: the pod still sells, which needs only Redis.
            assert client.post("/buy", json={}, headers={"x-forwarded-for": "10.8.0.1"}).status_code == 202
            (logged,) = _log_lines(tmp_path, "database unreachable")
            assert logged["level"] == "WARNING" and logged["reason"] == database["error"]

            own_postgres.start()
            wait_until(lambda: client.get("/readyz").json()["database"]["reachable"], 30, "PostgreSQL back")
    finally:
        system.stop()


@pytest.fixture
def own_redis() -> Iterator:
    with restartable_redis() as server:
        yield server


@pytest.mark.slow
def test_a_pod_is_not_ready_while_its_main_redis_is_away_and_logs_why_once_a_second(
    own_redis, database_url, fresh_db, tmp_path
):
    system = System(env=process_env(own_redis.url, database_url), log_dir=tmp_path)
    try:
        system.start_apis(1)
        with httpx.Client(base_url=system.url, timeout=10) as client:
            own_redis.stop()
            probes = [client.get("/readyz") for _ in range(10)]
            assert {probe.status_code for probe in probes} == {503}
            body = probes[0].json()
            assert (body["status"], body["reason"]) == ("unavailable", "main Redis: ConnectionError")
            assert body["checks"] == {"redis": False, "accepting": True}
            assert body["database"]["reachable"] is True, "reported beside, whatever Redis does"
            logged = _log_lines(tmp_path, "not ready")
            # Ten probes in well under a second or two: one line for each second begun at most.
            assert 1 <= len(logged) <= 2 and logged[0]["reason"] == "main Redis: ConnectionError"

            own_redis.start()
            wait_until(lambda: client.get("/readyz").status_code == 200, 30, "ready again with Redis")
    finally:
        system.stop()


def test_a_pod_answers_ready_within_the_probes_timeout_while_postgresql_and_the_limiter_hang(
    settings_env, redis_url, database_url, fresh_db
):
    """Held networks (nothing arrives, nothing is refused): each check gives up after its 2 s,
    side by side, inside the chart's 3 s probe timeout."""
    with tcp_proxy(make_url(database_url).port) as database, tcp_proxy(make_url(redis_url).port) as limiter:
        settings = settings_from_env(
            {
                **settings_env,
                "FLASHSALE_DATABASE_URL": make_url(database_url)
                .set(port=database.port)
                .render_as_string(False),
                "FLASHSALE_LIMITER_REDIS_URL": f"redis://127.0.0.1:{limiter.port}/0",
            }
        )
        with TestClient(create_app(settings)) as client:
            assert client.get("/readyz").json()["database"]["reachable"] is True
            database.hold()
            limiter.hold()
            started = time.monotonic()
            ready = client.get("/readyz")
            took = time.monotonic() - started
            database.resume()
            limiter.resume()
    assert ready.status_code == 200 and took < 3, (ready.status_code, took)
    assert ready.json()["database"] == {"reachable": False, "error": "no answer within 2s"}
    assert ready.json()["limiter"]["redis"] is False


def test_a_bug_in_a_readiness_check_is_a_500_not_a_quiet_not_ready(settings, fresh_db, monkeypatch):
    def broken_check(engine):
        raise RuntimeError("a bug in the check, not PostgreSQL being away")

    # Our own check is replaced, not a dependency: the bug is ours by construction.
    monkeypatch.setattr(health, "database_problem", broken_check)
    with TestClient(create_app(settings)) as client:
        assert_problem(client.get("/readyz"), 500, "internal")
